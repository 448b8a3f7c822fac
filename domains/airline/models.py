"""Typed records of the airline domain.

The JSON dump of every table has the same shape as tau2-bench's airline ``db.json`` (``flights``,
``users``, ``reservations`` keyed by id), so data round-trips between the two suites unchanged.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from apigen_envs.db import FrozenMap, Record

Cabin = Literal["basic_economy", "economy", "business"]
"""Cabin classes, cheapest first."""
FlightType = Literal["one_way", "round_trip"]
"""Trip shape of a reservation."""
Insurance = Literal["yes", "no"]
"""Whether travel insurance was bought."""
Membership = Literal["regular", "silver", "gold"]
"""Frequent-flyer tier."""

CABINS: tuple[Cabin, ...] = ("basic_economy", "economy", "business")


class Name(Record):
    """A person's name."""

    first_name: str
    last_name: str


class Address(Record):
    """A postal address."""

    address1: str
    address2: str | None = None
    city: str
    country: str
    state: str
    zip: str


class CreditCard(Record):
    """A saved credit card (charged without a balance limit)."""

    source: Literal["credit_card"]
    id: str
    brand: str
    last_four: str


class GiftCard(Record):
    """A gift card with a remaining balance in dollars."""

    source: Literal["gift_card"]
    id: str
    amount: float


class Certificate(Record):
    """A travel certificate: a one-time voucher worth ``amount`` dollars."""

    source: Literal["certificate"]
    id: str
    amount: float


PaymentMethod = Annotated[CreditCard | GiftCard | Certificate, Field(discriminator="source")]
"""Any saved payment method, told apart by ``source``."""


class Passenger(Record):
    """A traveller on a reservation or saved in a profile."""

    first_name: str
    last_name: str
    dob: str


class User(Record):
    """A customer profile."""

    user_id: str
    name: Name
    address: Address
    email: str
    dob: str
    payment_methods: FrozenMap[str, PaymentMethod]
    saved_passengers: tuple[Passenger, ...] = ()
    membership: Membership
    reservations: tuple[str, ...] = ()


class SeatsByCabin(Record):
    """An integer per cabin class (seats left, or prices in dollars)."""

    basic_economy: int
    economy: int
    business: int

    def of(self, cabin: Cabin) -> int:
        """The value for one cabin."""
        return int(getattr(self, cabin))


class DateAvailable(Record):
    """A future departure that can still be booked."""

    status: Literal["available"]
    available_seats: SeatsByCabin
    prices: SeatsByCabin


class DateOnTime(Record):
    """A departure expected on schedule (today, not yet departed)."""

    status: Literal["on time"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


class DateDelayed(Record):
    """A departure running late."""

    status: Literal["delayed"]
    estimated_departure_time_est: str
    estimated_arrival_time_est: str


class DateFlying(Record):
    """A flight in the air."""

    status: Literal["flying"]
    actual_departure_time_est: str
    estimated_arrival_time_est: str


class DateLanded(Record):
    """A completed flight."""

    status: Literal["landed"]
    actual_departure_time_est: str
    actual_arrival_time_est: str


class DateCancelled(Record):
    """A cancelled departure."""

    status: Literal["cancelled"]


FlightDate = Annotated[
    DateAvailable | DateOnTime | DateDelayed | DateFlying | DateLanded | DateCancelled,
    Field(discriminator="status"),
]
"""The state of one flight on one date, told apart by ``status``."""


class Flight(Record):
    """A scheduled route flown daily, with its state per date."""

    flight_number: str
    origin: str
    destination: str
    scheduled_departure_time_est: str
    scheduled_arrival_time_est: str
    dates: FrozenMap[str, FlightDate]


class ReservationFlight(Record):
    """One flight segment of a reservation, with the per-passenger price paid."""

    origin: str
    destination: str
    flight_number: str
    date: str
    price: int


class Payment(Record):
    """One payment (positive) or refund (negative) on a reservation."""

    payment_id: str
    amount: int


class Reservation(Record):
    """A booking: who flies, on which segments, in which cabin, and how it was paid."""

    reservation_id: str
    user_id: str
    origin: str
    destination: str
    flight_type: FlightType
    cabin: Cabin
    flights: tuple[ReservationFlight, ...]
    passengers: tuple[Passenger, ...]
    payment_history: tuple[Payment, ...]
    created_at: str
    total_baggages: int
    nonfree_baggages: int
    insurance: Insurance
    status: Literal["cancelled"] | None = None


# ---------------------------------------------------------------- tool argument and result objects


class _Arg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FlightInfo(_Arg):
    """A flight segment to book: flight number and date."""

    flight_number: str = Field(description="Flight number, such as 'HAT001'.")
    date: str = Field(description="Departure date as 'YYYY-MM-DD', such as '2024-05-01'.")


class PassengerInfo(_Arg):
    """A traveller's name and date of birth."""

    first_name: str = Field(description="First name, such as 'Noah'.")
    last_name: str = Field(description="Last name, such as 'Brown'.")
    dob: str = Field(description="Date of birth as 'YYYY-MM-DD', such as '1990-01-01'.")


class PaymentInfo(_Arg):
    """How much to charge to one saved payment method."""

    payment_id: str = Field(description="A payment method id from the user's profile, such as 'credit_card_7815826'.")
    amount: int = Field(description="The amount in whole dollars to charge to this payment method.")


class DirectFlight(BaseModel):
    """A bookable flight found by a search (the shape tau2-bench returns)."""

    flight_number: str
    origin: str
    destination: str
    status: Literal["available"] = "available"
    scheduled_departure_time_est: str
    scheduled_arrival_time_est: str
    date: str | None = None
    available_seats: SeatsByCabin
    prices: SeatsByCabin


class Airport(BaseModel):
    """An airport served by the airline."""

    iata: str
    city: str
