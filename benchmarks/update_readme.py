"""Re-run every ``$ kvsim ...`` example in README.md and put its output below it, so the
README's tables are what the code and the committed measurements give today (no GPU needed):

    python3 benchmarks/update_readme.py [--check]

A block is a fenced code block whose first line is ``$ kvsim ARGS``; everything after that line
up to the closing fence is replaced. ``--check`` changes nothing and exits 1 if a block is stale.
"""
import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"```\n(\$ kvsim [^\n]*)\n(.*?)```", re.S)


def output_of(command_line: str) -> str:
    words, root, args = shlex.split(command_line[2:]), README.parent, []
    for word in words[1:]:  # a shell would expand the globs: do the same
        matches = sorted(root.glob(word)) if any(c in word for c in "*?[") else []
        args += [str(p.relative_to(root)) for p in matches] or [word]
    done = subprocess.run([sys.executable, "-m", "kvsim", *args], capture_output=True, text=True, cwd=root)
    return done.stdout + done.stderr


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = README.read_text()
    stale = []

    def replace(match: re.Match) -> str:
        fresh = output_of(match.group(1))
        if fresh != match.group(2):
            stale.append(match.group(1))
        return f"```\n{match.group(1)}\n{fresh}```"

    new = BLOCK.sub(replace, text)
    for line in stale:
        print(f"{'stale' if args.check else 'updated'}: {line}")
    if not args.check and new != text:
        README.write_text(new)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
