"""Record types of the airline domain: the schema of every row, and the types tau2's tools build.

Rows live in the database as plain JSON (see :mod:`apigen_envs.db`); these models validate data on load,
normalise rows the way tau2 does, and are the very objects tau2's tools build from the agent's arguments
(a flight segment, a passenger, a payment, a reservation), so a value tau2 would refuse is refused here
with the same message. Class names, field names, field order and types follow tau2-bench's airline
records (including its ``FlightDataStatus...`` spelling).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, Field

Cabin = Literal["business", "economy", "basic_economy"]
"""Cabin classes."""
FlightType = Literal["round_trip", "one_way"]
"""Trip shape of a reservation."""
Insurance = Literal["yes", "no"]
"""Whether travel insurance was bought."""
Membership = Literal["gold", "silver", "regular"]
"""Frequent-flyer tier."""

CABINS: tuple[str, ...] = ("basic_economy", "economy", "business")
"""Cabin classes, cheapest first."""


class AirportCode(BaseModel):
    """An airport served by the airline."""

    iata: str
    city: str


class Name(BaseModel):
    """A person's name."""

    first_name: str
    last_name: str


class Address(BaseModel):
    """A postal address."""

    address1: str
    address2: str | None = None
    city: str
    country: str
    state: str
    zip: str


class Payment(BaseModel):
    """One payment (positive) or refund (negative) on a reservation, in whole dollars."""

    payment_id: str
    amount: int


class CreditCard(BaseModel):
    """A saved credit card (charged without a balance limit)."""

    source: Literal["credit_card"]
    id: str
    brand: str
    last_four: str


class GiftCard(BaseModel):
    """A gift card with a remaining balance in dollars."""

    source: Literal["gift_card"]
    id: str
    amount: float


class Certificate(BaseModel):
    """A travel certificate: a one-time voucher worth ``amount`` dollars."""

    source: Literal["certificate"]
    id: str
    amount: float


class Passenger(BaseModel):
    """A traveller on a reservation or saved in a profile."""

    first_name: str
    last_name: str
    dob: str


class FlightDateStatusAvailable(BaseModel):
    """A future departure that can still be booked."""

    status: Literal["available"]
    available_seats: dict[Cabin, int]
    prices: dict[Cabin, int]


class FlightDataStatusOnTime(BaseModel):
    """A departure expected on schedule (today, not yet departed)."""

    status: Literal["on time"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


class FlightDataStatusFlying(BaseModel):
    """A flight in the air."""

    status: Literal["flying"]
    actual_departure_time_est: str
    estimated_arrival_time_est: str


class FlightDateStatusLanded(BaseModel):
    """A completed flight."""

    status: Literal["landed"]
    actual_departure_time_est: str
    actual_arrival_time_est: str


class FlightDateStatusCancelled(BaseModel):
    """A cancelled departure."""

    status: Literal["cancelled"]


class FlightDateStatusDelayed(BaseModel):
    """A departure running late."""

    status: Literal["delayed"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


FlightDateStatus = Annotated[
    FlightDateStatusAvailable
    | FlightDateStatusLanded
    | FlightDateStatusCancelled
    | FlightDateStatusDelayed
    | FlightDataStatusFlying
    | FlightDataStatusOnTime,
    Field(discriminator="status"),
]
"""The state of one flight on one date. Told apart by ``status`` (tau2 tries each type in turn; the result
is the same, and rows are only validated on load, so the faster discriminated form is used)."""


class Flight(BaseModel):
    """A scheduled route flown daily, with its state per date."""

    flight_number: str
    origin: str
    destination: str
    scheduled_departure_time_est: str
    scheduled_arrival_time_est: str
    dates: dict[str, FlightDateStatus]


class DirectFlight(BaseModel):
    """A bookable flight found by a search (the shape tau2 returns)."""

    flight_number: str
    origin: str
    destination: str
    status: Literal["available"]
    scheduled_departure_time_est: str
    scheduled_arrival_time_est: str
    date: str | None = None
    available_seats: dict[Cabin, int]
    prices: dict[Cabin, int]


class ReservationFlight(BaseModel):
    """One flight segment of a reservation, with the per-passenger price paid."""

    flight_number: str
    origin: str
    destination: str
    date: str
    price: int


class FlightInfo(BaseModel):
    """A flight segment to book: flight number and date."""

    flight_number: str = Field(description="Flight number, such as 'HAT001'.")
    date: str = Field(description="The date of the flight as 'YYYY-MM-DD', such as '2024-05-01'.")


class User(BaseModel):
    """A customer profile."""

    user_id: str
    name: Name
    address: Address
    email: str
    dob: str
    payment_methods: dict[str, Annotated[CreditCard | GiftCard | Certificate, Field(discriminator="source")]]
    saved_passengers: list[Passenger]
    membership: Membership
    reservations: list[str]


class Reservation(BaseModel):
    """A booking: who flies, on which segments, in which cabin, and how it was paid."""

    reservation_id: str
    user_id: str
    origin: str
    destination: str
    flight_type: FlightType
    cabin: Cabin
    flights: list[ReservationFlight]
    passengers: list[Passenger]
    payment_history: list[Payment]
    created_at: str
    total_baggages: int
    nonfree_baggages: int
    insurance: Insurance
    status: Literal["cancelled"] | None = None


# ---------------------------------------------------------------- schema-only argument types
class PassengerInfo(BaseModel):
    """A traveller's name and date of birth (a tool argument)."""

    first_name: str = Field(description="First name, such as 'Noah'.")
    last_name: str = Field(description="Last name, such as 'Brown'.")
    dob: str = Field(description="Date of birth as 'YYYY-MM-DD', such as '1990-01-01'.")


class PaymentInfo(BaseModel):
    """How much to charge to one saved payment method (a tool argument)."""

    payment_id: str = Field(description="A payment method id from the user's profile, such as 'credit_card_7815826'.")
    amount: float = Field(description="The amount in dollars to charge to this payment method.")


TABLES: Mapping[str, tuple[type[BaseModel], str]] = MappingProxyType(
    {"flights": (Flight, "flight_number"), "users": (User, "user_id"), "reservations": (Reservation, "reservation_id")}
)
"""Table name -> (row model, key field), in ``db.json`` order."""
