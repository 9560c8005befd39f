"""Hourly GPU prices with their sources: the shipped table (``kvsim/prices.yaml``) and the user's."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .errors import KvsimError
from .hardware import HardwareProfile
from .yamlfile import read_mapping, validated

PRICES_FILE = Path(__file__).with_name("prices.yaml")


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    usd_per_gpu_hour: float = Field(gt=0, le=1e6, allow_inf_nan=False, strict=True)  # above $1M an hour: a typo
    provider: str = Field(min_length=1)
    product: str = ""
    source: str = Field(min_length=3)
    checked: str = Field(min_length=4, description="the day the price was read")
    via: str = ""


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """The shipped price table, with the entries of ``path`` (same fields) replacing its own."""
    prices = _read_prices(PRICES_FILE)
    if path is not None:
        prices.update(_read_prices(Path(path)))
    return prices


def _read_prices(path: Path) -> dict[str, Price]:
    data = read_mapping(path, "price file")
    if not isinstance(data.get("prices"), dict):
        raise KvsimError(f"{path}: expected a 'prices:' mapping of hardware name to price fields")
    return {str(name): validated(Price, fields_, path, prefix=f"prices.{name}.")
            for name, fields_ in data["prices"].items()}


def price_for(hw: HardwareProfile, prices: dict[str, Price]) -> Price | None:
    return next((prices[n] for n in [hw.name, *hw.aliases] if n in prices), None)
