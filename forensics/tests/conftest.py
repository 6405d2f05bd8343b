"""An election with imported protocols, generated with known answers."""

import numpy as np
import pytest

from elections.tests.factories import ElectionFactory
from protocols.services import protocols_import
from protocols.tests.files import Row, commission_csv

OPTIONS = ["Партия А", "Партия Б", "Партия В"]


def generated_rows(count: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        registered = int(rng.integers(150, 2500))
        issued = int(rng.binomial(registered, rng.uniform(0.35, 0.9)))
        invalid = int(rng.integers(0, 4))
        valid = max(issued - invalid, 1)
        a = int(rng.binomial(valid, rng.uniform(0.3, 0.75)))
        b = int(rng.binomial(valid - a, 0.5))
        early, outside = issued // 20, issued // 15
        rows.append(
            Row(
                "Область",
                f"ТИК {i % 7}",
                f"УИК №{i}",
                registered,
                early,
                issued - early - outside,
                outside,
                valid,
                invalid,
                [a, b, valid - a - b],
            )
        )
    return rows


def import_rows(election, rows, tmp_path, name="protocols.csv"):
    return protocols_import(
        path=commission_csv(tmp_path / name, rows, OPTIONS), election=election, on_rejected=lambda *a: None
    )


@pytest.fixture
def protocol_rows():
    return generated_rows(120, seed=4)


@pytest.fixture
def protocol_election(db, tmp_path, protocol_rows):
    election = ElectionFactory(code="forensic")
    import_rows(election, protocol_rows, tmp_path)
    return election
