"""Seeded generator of a realistic retail DB in tau2-bench's ``db.json`` shape.

The default size matches tau-bench's (500 users, about 1,000 orders, 50 product types with 5 to 20
variant items each); ``scale`` multiplies users and orders (the catalog stays the same). The same seed
always gives the same DB, byte for byte.

Command line::

    python -m apigen_envs.domains.retail.generate --seed 0 --scale 100 --out retail_100x.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def to_cents(value: float) -> float:
    """Round an amount of money to cents, as the generator stores every amount (tools do not round)."""
    return round(float(value), 2)


# ---------------------------------------------------------------------------------------------- catalog
# fmt: off
# name, {option: values}, (min price, max price)
CATALOG: tuple[tuple[str, dict[str, tuple[str, ...]], tuple[float, float]], ...] = (
    ("T-Shirt", {"color": ("black", "white", "navy", "red", "green", "heather gray"), "size": ("S", "M", "L", "XL", "XXL"), "material": ("cotton", "polyester", "linen blend"), "fit": ("regular", "slim")}, (14, 45)),  # noqa: E501
    ("Hoodie", {"color": ("black", "gray", "navy", "olive"), "size": ("S", "M", "L", "XL"), "lining": ("fleece", "cotton")}, (35, 90)),  # noqa: E501
    ("Rain Jacket", {"color": ("yellow", "navy", "black", "red"), "size": ("S", "M", "L", "XL"), "packable": ("yes", "no")}, (60, 180)),  # noqa: E501
    ("Jeans", {"waist": ("28", "30", "32", "34", "36"), "length": ("30", "32", "34"), "fit": ("straight", "slim", "relaxed"), "wash": ("dark", "light")}, (40, 120)),  # noqa: E501
    ("Running Shoes", {"size": ("7", "8", "9", "10", "11", "12"), "color": ("black", "white", "blue", "orange"), "cushioning": ("neutral", "stability")}, (70, 190)),  # noqa: E501
    ("Hiking Boots", {"size": ("7", "8", "9", "10", "11", "12"), "material": ("leather", "synthetic"), "waterproof": ("yes", "no")}, (90, 260)),  # noqa: E501
    ("Sneakers", {"size": ("6", "7", "8", "9", "10", "11"), "color": ("white", "black", "gray", "red"), "material": ("canvas", "leather", "knit")}, (45, 150)),  # noqa: E501
    ("Wool Socks", {"size": ("S", "M", "L"), "color": ("gray", "charcoal", "green"), "pack": ("3-pack", "6-pack")}, (12, 40)),  # noqa: E501
    ("Backpack", {"color": ("black", "gray", "green", "navy"), "capacity": ("20L", "28L", "35L"), "material": ("nylon", "polyester", "canvas")}, (35, 160)),  # noqa: E501
    ("Luggage Set", {"pieces": ("2-piece", "3-piece", "4-piece"), "color": ("black", "silver", "blue"), "shell": ("hardside", "softside")}, (150, 520)),  # noqa: E501
    ("Sunglasses", {"frame color": ("black", "tortoise", "gold", "silver"), "lens": ("gray", "green", "brown", "mirrored"), "polarized": ("yes", "no")}, (30, 220)),  # noqa: E501
    ("Wristwatch", {"strap": ("leather", "steel", "silicone"), "dial color": ("black", "white", "blue"), "case size": ("38mm", "42mm")}, (80, 650)),  # noqa: E501
    ("Laptop", {"screen size": ("13-inch", "14-inch", "15-inch", "16-inch"), "processor": ("i5", "i7", "i9", "ryzen 7"), "ram": ("8GB", "16GB", "32GB"), "storage": ("256GB SSD", "512GB SSD", "1TB SSD")}, (650, 2800)),  # noqa: E501
    ("Tablet", {"screen size": ("8-inch", "10-inch", "12-inch"), "storage": ("64GB", "128GB", "256GB"), "color": ("silver", "space gray", "gold")}, (180, 1100)),  # noqa: E501
    ("Smartphone", {"color": ("black", "white", "blue", "purple"), "storage": ("128GB", "256GB", "512GB"), "screen size": ("6.1-inch", "6.7-inch")}, (400, 1400)),  # noqa: E501
    ("E-Reader", {"screen size": ("6-inch", "7-inch"), "connectivity": ("Wi-Fi", "Wi-Fi + Cellular"), "storage": ("8GB", "16GB", "32GB")}, (90, 300)),  # noqa: E501
    ("Wireless Earbuds", {"color": ("black", "white", "blue"), "noise cancelling": ("yes", "no"), "battery life": ("6 hours", "8 hours", "10 hours")}, (40, 280)),  # noqa: E501
    ("Headphones", {"type": ("over-ear", "on-ear"), "connectivity": ("wired", "wireless"), "color": ("black", "white", "red")}, (45, 400)),  # noqa: E501
    ("Bluetooth Speaker", {"color": ("black", "blue", "red", "green"), "battery life": ("10 hours", "20 hours", "30 hours"), "water resistance": ("yes", "no")}, (35, 320)),  # noqa: E501
    ("Smart Watch", {"color": ("black", "silver", "rose gold"), "band": ("silicone", "leather", "metal"), "display": ("LCD", "AMOLED")}, (150, 520)),  # noqa: E501
    ("Digital Camera", {"resolution": ("20MP", "24MP", "30MP"), "zoom": ("3x", "5x", "10x"), "storage": ("SD card", "CF card")}, (300, 2600)),  # noqa: E501
    ("Action Camera", {"resolution": ("1080p", "4K", "5K"), "waterproof": ("yes", "no"), "color": ("black", "silver")}, (120, 520)),  # noqa: E501
    ("Gaming Mouse", {"color": ("black", "white", "RGB"), "sensor": ("optical", "laser"), "connectivity": ("wired", "wireless")}, (25, 160)),  # noqa: E501
    ("Mechanical Keyboard", {"switch type": ("linear", "tactile", "clicky"), "backlight": ("none", "white", "RGB"), "size": ("full size", "TKL", "60%")}, (60, 280)),  # noqa: E501
    ("Computer Monitor", {"screen size": ("24-inch", "27-inch", "32-inch"), "resolution": ("1080p", "1440p", "4K"), "refresh rate": ("60Hz", "144Hz")}, (140, 900)),  # noqa: E501
    ("Portable Charger", {"capacity": ("5000mAh", "10000mAh", "20000mAh"), "output": ("USB-A", "USB-C", "wireless"), "color": ("black", "white")}, (20, 95)),  # noqa: E501
    ("Indoor Security Camera", {"resolution": ("1080p", "2K", "4K"), "field of view": ("110 degrees", "130 degrees"), "connectivity": ("Wi-Fi", "Ethernet")}, (40, 250)),  # noqa: E501
    ("Smart Thermostat", {"compatibility": ("Google Assistant", "Amazon Alexa", "Apple HomeKit"), "color": ("white", "black", "stainless steel")}, (110, 300)),  # noqa: E501
    ("LED Light Bulb", {"brightness": ("60W equivalent", "75W equivalent", "100W equivalent"), "color temperature": ("warm white", "daylight"), "connectivity": ("none", "Wi-Fi", "Bluetooth")}, (8, 60)),  # noqa: E501
    ("Desk Lamp", {"color": ("black", "white", "silver"), "brightness": ("low", "medium", "high"), "power source": ("USB", "AC adapter", "battery")}, (20, 160)),  # noqa: E501
    ("Coffee Maker", {"color": ("black", "stainless steel", "white"), "capacity": ("4 cups", "8 cups", "12 cups"), "type": ("drip", "pour-over", "single serve")}, (35, 320)),  # noqa: E501
    ("Espresso Machine", {"pressure": ("9 bar", "15 bar", "19 bar"), "capacity": ("1L", "1.5L", "2L"), "type": ("manual", "automatic", "capsule")}, (120, 2800)),  # noqa: E501
    ("Electric Kettle", {"capacity": ("1L", "1.5L", "1.7L"), "material": ("glass", "stainless steel", "plastic"), "color": ("white", "black", "silver")}, (25, 140)),  # noqa: E501
    ("Blender", {"capacity": ("32 oz", "48 oz", "64 oz"), "power": ("600W", "1000W", "1500W"), "color": ("black", "red", "silver")}, (40, 420)),  # noqa: E501
    ("Air Fryer", {"capacity": ("2 quarts", "4 quarts", "6 quarts"), "color": ("black", "white", "gray"), "display": ("dial", "digital")}, (50, 230)),  # noqa: E501
    ("Cookware Set", {"material": ("stainless steel", "nonstick", "cast iron"), "pieces": ("5-piece", "8-piece", "12-piece")}, (70, 480)),  # noqa: E501
    ("Water Bottle", {"capacity": ("500ml", "750ml", "1000ml"), "material": ("stainless steel", "glass", "plastic"), "color": ("blue", "black", "green", "red")}, (10, 55)),  # noqa: E501
    ("Vacuum Cleaner", {"type": ("upright", "canister", "robotic", "stick"), "bag": ("bagged", "bagless"), "features": ("pet hair removal", "HEPA filter", "cordless")}, (90, 780)),  # noqa: E501
    ("Air Purifier", {"room size": ("small", "medium", "large"), "filter": ("HEPA", "carbon", "ionic"), "features": ("night mode", "quiet operation", "smart sensors")}, (70, 560)),  # noqa: E501
    ("Office Chair", {"material": ("mesh", "leather", "fabric"), "color": ("black", "gray", "blue"), "armrests": ("fixed", "adjustable", "none")}, (110, 650)),  # noqa: E501
    ("Bookshelf", {"material": ("wood", "metal", "glass"), "color": ("white", "brown", "black"), "height": ("3 ft", "5 ft", "6 ft")}, (60, 480)),  # noqa: E501
    ("Wall Clock", {"diameter": ("10 inches", "12 inches", "14 inches"), "color": ("black", "white", "wood"), "movement": ("analog", "digital")}, (18, 120)),  # noqa: E501
    ("Pet Bed", {"size": ("small", "medium", "large"), "material": ("polyester", "memory foam", "fleece"), "color": ("gray", "brown", "beige")}, (25, 190)),  # noqa: E501
    ("Yoga Mat", {"thickness": ("4mm", "6mm", "8mm"), "material": ("PVC", "TPE", "natural rubber"), "color": ("purple", "blue", "pink", "black")}, (18, 110)),  # noqa: E501
    ("Dumbbell Set", {"weight range": ("5-25 lbs", "10-50 lbs", "30-60 lbs"), "material": ("iron", "rubber", "urethane"), "type": ("fixed", "adjustable")}, (45, 560)),  # noqa: E501
    ("Bicycle", {"frame size": ("small", "medium", "large"), "color": ("black", "red", "blue", "green"), "type": ("road", "mountain", "hybrid")}, (350, 2200)),  # noqa: E501
    ("Cycling Helmet", {"size": ("S", "M", "L"), "color": ("black", "white", "red", "blue"), "ventilation": ("low", "medium", "high")}, (35, 240)),  # noqa: E501
    ("Tent", {"capacity": ("2-person", "4-person", "6-person"), "season": ("3-season", "4-season"), "color": ("green", "orange", "gray")}, (80, 620)),  # noqa: E501
    ("Garden Hose", {"length": ("25 ft", "50 ft", "100 ft"), "material": ("rubber", "vinyl", "latex"), "color": ("green", "black", "blue")}, (20, 110)),  # noqa: E501
    ("Board Game", {"players": ("2-4", "2-6", "3-8"), "theme": ("strategy", "party", "cooperative"), "edition": ("standard", "deluxe")}, (20, 95)),  # noqa: E501
)

FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "Mateo", "Isabella", "Lucas", "Mia", "Amir",
    "Charlotte", "Ethan", "Amelia", "Kenji", "Harper", "Diego", "Evelyn", "Omar", "Abigail", "Ravi", "Emily",
    "Samuel", "Ella", "Hiro", "Grace", "Daniel", "Chloe", "Yusuf", "Zoe", "Aarav", "Nora", "Leo", "Lily",
    "Carlos", "Hannah", "Wei", "Aisha", "Jonah", "Priya", "Felix", "Sofia", "Malik", "Ingrid", "Tomas",
    "Layla", "Arjun", "Fatima", "Oscar", "Mei", "Julian", "Nadia", "Isaac", "Yara", "Victor", "Leah", "Andre",
    "Clara", "Kofi",
)
LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Nguyen", "Patel", "Kim", "Brown", "Lopez", "Wilson", "Martinez", "Anderson",
    "Hernandez", "Moore", "Taylor", "Thomas", "Jackson", "White", "Harris", "Clark", "Lewis", "Robinson", "Walker",
    "Young", "Allen", "King", "Wright", "Scott", "Torres", "Hill", "Flores", "Green", "Adams", "Nelson", "Baker",
    "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Chen", "Wang", "Singh", "Khan", "Ali", "Ivanov",
    "Rossi", "Muller", "Silva", "Sato", "Tanaka", "Okafor", "Mensah", "Cohen", "Novak", "Larsen", "Dubois",
    "Morales", "Reyes", "Ortiz", "Brooks",
)
STREETS = (
    "Main Street", "Oak Avenue", "Maple Drive", "Cedar Lane", "Pine Street", "Elm Street", "Washington Avenue",
    "Lake Shore Drive", "Sunset Boulevard", "Park Avenue", "River Road", "Hillcrest Drive", "Highland Avenue",
    "Willow Lane", "Chestnut Street", "Spruce Street", "Broadway", "Market Street", "Lincoln Avenue",
    "Jefferson Street", "Franklin Street", "Madison Avenue", "Walnut Street", "Cherry Lane", "Birch Road",
    "Meadow Lane", "Forest Drive", "Valley Road", "Harbor Way", "Mill Street", "Church Street", "Bay Street",
    "Ridge Road", "Laurel Lane", "Aspen Court", "Dogwood Drive", "Magnolia Avenue", "Sycamore Street",
    "Juniper Way", "Cypress Court",
)
# city, state, first three digits of its zip codes
CITIES = (
    ("New York", "NY", "100"), ("Los Angeles", "CA", "900"), ("Chicago", "IL", "606"), ("Houston", "TX", "770"),
    ("Phoenix", "AZ", "850"), ("Philadelphia", "PA", "191"), ("San Antonio", "TX", "782"), ("San Diego", "CA", "921"),
    ("Dallas", "TX", "752"), ("San Jose", "CA", "951"), ("Austin", "TX", "787"), ("Jacksonville", "FL", "322"),
    ("Columbus", "OH", "432"), ("Charlotte", "NC", "282"), ("Indianapolis", "IN", "462"),
    ("San Francisco", "CA", "941"),
    ("Seattle", "WA", "981"), ("Denver", "CO", "802"), ("Washington", "DC", "200"), ("Boston", "MA", "021"),
    ("Nashville", "TN", "372"), ("Portland", "OR", "972"), ("Atlanta", "GA", "303"), ("Minneapolis", "MN", "554"),
    ("Miami", "FL", "331"), ("Pittsburgh", "PA", "152"), ("Milwaukee", "WI", "532"), ("Raleigh", "NC", "276"),
    ("Salt Lake City", "UT", "841"), ("Detroit", "MI", "482"),
)
# fmt: on
CARD_BRANDS = ("visa", "mastercard", "amex", "discover")

STATUS_WEIGHTS = (
    ("pending", 40),
    ("processed", 10),
    ("delivered", 36),
    ("cancelled", 10),
    ("return requested", 2),
    ("exchange requested", 2),
)
SHIPPED = frozenset({"processed", "delivered", "return requested", "exchange requested"})


class _Ids:
    """Unique random numeric ids (one namespace per generator run)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def digits(self, n: int, prefix: str = "") -> str:
        while True:
            value = prefix + str(self.rng.randrange(10 ** (n - 1), 10**n))
            if value not in self.used:
                self.used.add(value)
                return value


def generate_products(seed: int) -> dict[str, dict[str, Any]]:
    """The product catalog: 50 product types with 5 to 20 variant items each (independent of scale)."""
    rng = random.Random(f"retail-catalog-{seed}")
    ids = _Ids(rng)
    products: dict[str, dict[str, Any]] = {}
    for name, options, (low, high) in CATALOG:
        combos = list(itertools.product(*options.values()))
        rng.shuffle(combos)
        count = min(len(combos), rng.randint(5, 20))
        base = rng.uniform(low, high)
        variants: dict[str, dict[str, Any]] = {}
        for combo in combos[:count]:
            item_id = ids.digits(10)
            variants[item_id] = {
                "item_id": item_id,
                "options": dict(zip(options, combo, strict=True)),
                "available": rng.random() < 0.65,
                "price": to_cents(base * rng.uniform(0.85, 1.15)),
            }
        product_id = ids.digits(10)
        products[product_id] = {"name": name, "product_id": product_id, "variants": variants}
    return products


def random_address(rng: random.Random) -> dict[str, str]:
    """A plausible US address in tau2's field order."""
    city, state, zip_prefix = rng.choice(CITIES)
    roll = rng.random()
    address2 = f"Suite {rng.randint(100, 999)}" if roll < 0.7 else f"Apt {rng.randint(1, 40)}" if roll < 0.9 else ""
    return {
        "address1": f"{rng.randint(10, 9999)} {rng.choice(STREETS)}",
        "address2": address2,
        "city": city,
        "country": "USA",
        "state": state,
        "zip": f"{zip_prefix}{rng.randint(0, 99):02d}",
    }


def _payment_methods(rng: random.Random, ids: _Ids) -> dict[str, dict[str, Any]]:
    count = rng.choices((1, 2, 3, 4), weights=(65, 27, 6, 2))[0]
    sources = rng.sample(("credit_card", "paypal", "gift_card"), min(count, 3))
    if count == 4:
        sources.append("credit_card")
    methods: dict[str, dict[str, Any]] = {}
    for source in sources:
        method_id = ids.digits(7, f"{source}_")
        if source == "credit_card":
            methods[method_id] = {
                "source": source,
                "id": method_id,
                "brand": rng.choice(CARD_BRANDS),
                "last_four": f"{rng.randint(0, 9999):04d}",
            }
        elif source == "gift_card":
            methods[method_id] = {"source": source, "id": method_id, "balance": to_cents(rng.uniform(0, 300))}
        else:
            methods[method_id] = {"source": source, "id": method_id}
    return methods


def generate_users(rng: random.Random, ids: _Ids, count: int) -> dict[str, dict[str, Any]]:
    """``count`` users with unique ids, emails and (name, zip) pairs."""
    users: dict[str, dict[str, Any]] = {}
    emails: set[str] = set()
    name_zips: set[tuple[str, str, str]] = set()
    while len(users) < count:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        user_id = f"{first}_{last}_{rng.randint(1000, 9999)}".lower()
        email = f"{first}.{last}{rng.randint(1000, 9999)}@example.com".lower()
        address = random_address(rng)
        key = (first, last, address["zip"])
        if user_id in users or email in emails or key in name_zips:
            continue
        emails.add(email)
        name_zips.add(key)
        users[user_id] = {
            "user_id": user_id,
            "name": {"first_name": first, "last_name": last},
            "address": address,
            "email": email,
            "payment_methods": _payment_methods(rng, ids),
            "orders": [],
        }
    return users


def _order(
    rng: random.Random, ids: _Ids, order_id: str, user: dict[str, Any], products: list[dict[str, Any]]
) -> dict[str, Any]:
    items = []
    for product in rng.sample(products, rng.randint(1, 5)):
        variant = rng.choice(list(product["variants"].values()))
        items.append(
            {
                "name": product["name"],
                "product_id": product["product_id"],
                "item_id": variant["item_id"],
                "price": variant["price"],
                "options": dict(variant["options"]),
            }
        )
    status = rng.choices([s for s, _ in STATUS_WEIGHTS], weights=[w for _, w in STATUS_WEIGHTS])[0]
    method_id = rng.choice(list(user["payment_methods"]))
    total = to_cents(sum(item["price"] for item in items))
    order: dict[str, Any] = {
        "order_id": order_id,
        "user_id": user["user_id"],
        "address": dict(user["address"]) if rng.random() < 0.8 else random_address(rng),
        "items": items,
        "status": status,
        "fulfillments": [],
        "payment_history": [{"transaction_type": "payment", "amount": total, "payment_method_id": method_id}],
    }
    if status in SHIPPED:
        item_ids = [item["item_id"] for item in items]
        split = rng.randint(1, len(item_ids) - 1) if len(item_ids) > 1 and rng.random() < 0.15 else len(item_ids)
        for part in (item_ids[:split], item_ids[split:]):
            if part:
                order["fulfillments"].append({"tracking_id": [ids.digits(12)], "item_ids": part})
    if status == "cancelled":
        order["payment_history"].append({"transaction_type": "refund", "amount": total, "payment_method_id": method_id})
        order["cancel_reason"] = rng.choice(("no longer needed", "ordered by mistake"))
    elif status == "return requested":
        chosen = rng.sample(items, rng.randint(1, len(items)))
        order["return_items"] = sorted(item["item_id"] for item in chosen)
        order["return_payment_method_id"] = method_id
    elif status == "exchange requested":
        by_id = {p["product_id"]: p for p in products}
        olds, news, diff = [], [], 0.0
        for item in rng.sample(items, rng.randint(1, len(items))):
            variants = by_id[item["product_id"]]["variants"].values()
            choices = [v for v in variants if v["available"] and v["item_id"] != item["item_id"]]
            if not choices:
                continue
            new = rng.choice(choices)
            olds.append(item["item_id"])
            news.append(new["item_id"])
            diff += new["price"] - item["price"]
        if not olds:  # nothing exchangeable: the order simply stays delivered
            order["status"] = "delivered"
        else:
            order["exchange_items"] = sorted(olds)
            order["exchange_new_items"] = sorted(news)
            order["exchange_payment_method_id"] = method_id
            order["exchange_price_difference"] = to_cents(diff)
    return order


def generate_db(seed: int = 0, scale: float = 1.0) -> dict[str, Any]:
    """Generate a retail DB as raw JSON in tau2-bench's ``db.json`` shape.

    Args:
        seed: The seed; the same seed and scale always give the same DB.
        scale: Multiplies the number of users (500) and orders (1,000); the catalog is fixed.

    Returns:
        ``{"products": {...}, "users": {...}, "orders": {...}}``.

    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    products = generate_products(seed)
    rng = random.Random(f"retail-db-{seed}-{float(scale)!r}")
    ids = _Ids(rng)
    ids.used.update(products)
    ids.used.update(item for p in products.values() for item in p["variants"])
    users = generate_users(rng, ids, max(1, round(500 * scale)))
    user_list = list(users.values())
    product_list = list(products.values())
    orders: dict[str, dict[str, Any]] = {}
    for _ in range(max(1, round(1000 * scale))):
        user = rng.choice(user_list)
        order_id = ids.digits(7, "#W")
        orders[order_id] = _order(rng, ids, order_id, user, product_list)
        user["orders"].append(order_id)
    return {"products": products, "users": users, "orders": orders}


def write_db(db: dict[str, Any], out: Path, indent: int | None = None) -> None:
    """Write a generated DB as JSON (UTF-8), creating parent directories."""
    out.parent.mkdir(parents=True, exist_ok=True)
    separators = None if indent is not None else (",", ":")
    out.write_text(json.dumps(db, indent=indent, separators=separators, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m apigen_envs.domains.retail.generate", description="Generate a seeded retail db.json."
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies users and orders (default 1)")
    parser.add_argument("--out", type=Path, required=True, help="output db.json path")
    parser.add_argument("--indent", type=int, default=None, help="JSON indent (default: compact)")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    db = generate_db(args.seed, args.scale)
    write_db(db, args.out, args.indent)
    counts = ", ".join(f"{len(rows)} {name}" for name, rows in db.items())
    print(f"wrote {args.out} ({counts})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
