"""Bank accounts with the ``eventsourcing`` library, stored by the gateway (docs/eventsourcing.md).

    gater up                                              # in another terminal
    pip install -e '.[eventsourcing]'
    PERSISTENCE_MODULE=eventsourcing_gater python examples/eventsourcing_bank.py

Saves an account (and a snapshot of it), reloads it in a new application object, then runs a
process application, ``Statements``, that follows ``BankAccounts`` and keeps a statement per
account. Events go to the stores ``BankAccounts`` and ``Statements`` (the application names),
the snapshot to ``BankAccounts-snapshots``.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application, ProcessingEvent
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, DomainEventProtocol, event
from eventsourcing.system import ProcessApplication, SingleThreadedRunner, System

from eventsourcing_gater import GaterFactory

# --- the domain --------------------------------------------------------------------------------


class BankAccount(Aggregate):
    class Opened(Aggregate.Created):
        owner: str

    class Deposited(Aggregate.Event):
        amount: Decimal

    class Withdrawn(Aggregate.Event):
        amount: Decimal

    @event(Opened)
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = Decimal("0.00")

    @event(Deposited)
    def deposit(self, amount: Decimal) -> None:
        self.balance += amount

    @event(Withdrawn)
    def withdraw(self, amount: Decimal) -> None:
        self.balance -= amount


class Statement(Aggregate):
    """The statement of one account, made by the process application."""

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"/statements/{account_id}")

    class Started(Aggregate.Created):
        account_id: UUID

    class LineAdded(Aggregate.Event):
        line: str

    @event(Started)
    def __init__(self, account_id: UUID) -> None:
        self.account_id = account_id
        self.lines: list[str] = []

    @event(LineAdded)
    def add_line(self, line: str) -> None:
        self.lines.append(line)


# --- the applications --------------------------------------------------------------------------


class BankAccounts(Application[UUID]):
    is_snapshotting_enabled = True

    def open_account(self, owner: str) -> UUID:
        account = BankAccount(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: UUID, amount: Decimal) -> None:
        account: BankAccount = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)

    def withdraw(self, account_id: UUID, amount: Decimal) -> None:
        account: BankAccount = self.repository.get(account_id)
        if amount > account.balance:
            raise ValueError(f"insufficient funds: {account.balance} < {amount}")
        account.withdraw(amount)
        self.save(account)

    def balance(self, account_id: UUID) -> Decimal:
        account: BankAccount = self.repository.get(account_id)
        return account.balance


class Statements(ProcessApplication[UUID]):
    """Follows BankAccounts: each of its events becomes a line of the account's statement,
    recorded together with the position of the event it came from (exactly once)."""

    @singledispatchmethod
    def policy(self, domain_event: DomainEventProtocol[UUID], processing_event: ProcessingEvent[UUID]) -> None:
        """Other events: nothing to do."""

    @policy.register
    def _(self, domain_event: BankAccount.Opened, processing_event: ProcessingEvent[UUID]) -> None:
        processing_event.collect_events(Statement(domain_event.originator_id))

    @policy.register
    def _(self, domain_event: BankAccount.Deposited, processing_event: ProcessingEvent[UUID]) -> None:
        self._line(domain_event.originator_id, f"+{domain_event.amount}", processing_event)

    @policy.register
    def _(self, domain_event: BankAccount.Withdrawn, processing_event: ProcessingEvent[UUID]) -> None:
        self._line(domain_event.originator_id, f"-{domain_event.amount}", processing_event)

    def _line(self, account_id: UUID, line: str, processing_event: ProcessingEvent[UUID]) -> None:
        statement: Statement = self.repository.get(Statement.create_id(account_id))
        statement.add_line(line)
        processing_event.collect_events(statement)

    def lines(self, account_id: UUID) -> list[str]:
        statement: Statement = self.repository.get(Statement.create_id(account_id))
        return statement.lines


# --- the walk-through --------------------------------------------------------------------------


def store_of(app: Application[UUID]) -> str:
    """The gateway store an application writes to."""
    assert isinstance(app.factory, GaterFactory)
    return app.factory.config.store


def main(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Save, reload, follow; return what was seen (for tests/eventsourcing/test_example.py)."""
    env = {"PERSISTENCE_MODULE": "eventsourcing_gater", **(env or {})}

    # 1. Save: open an account, move money, take a snapshot.
    bank = BankAccounts(env=env)
    account_id = bank.open_account("Alice")
    bank.deposit(account_id, Decimal("100.00"))
    bank.withdraw(account_id, Decimal("30.00"))
    bank.take_snapshot(account_id)
    bank_store = store_of(bank)
    print(f"saved account {account_id} in store {bank_store!r}")
    bank.close()

    # 2. Reload: a new application object (as another process would) rebuilds it from the store.
    bank = BankAccounts(env=env)
    balance = bank.balance(account_id)
    print(f"reloaded: balance {balance}")
    bank.close()

    # 3. Follow: a process application turns the account's events into a statement.
    runner: SingleThreadedRunner[UUID] = SingleThreadedRunner(System(pipes=[[BankAccounts, Statements]]), env=env)
    runner.start()
    try:
        runner.get(BankAccounts).deposit(account_id, Decimal("5.00"))  # prompts Statements to catch up
        lines = runner.get(Statements).lines(account_id)
        statements_store = store_of(runner.get(Statements))
        print(f"statement: {' '.join(lines)}")
    finally:
        runner.stop()
    return {
        "account_id": str(account_id),
        "balance": str(balance),
        "lines": lines,
        "stores": [bank_store, statements_store],
    }


if __name__ == "__main__":
    seen = main(dict(os.environ))
    prefix = os.environ.get("ESDB_GATER_SUBJECT_PREFIX", "esdb")
    print(f"read the same events: gater req {prefix}.api.{seen['stores'][0]}.stream.read_all '{{\"limit\":10}}'")
    sys.exit(0)
