"""Reading a tempest run's subunit stream and comparing two runs (no cloud needed)."""

from __future__ import annotations

import io

import subunit

from trusted_launch.sandbox.cloud.tempest_results import (
    comparison,
    counts,
    differences,
    fixture_failures,
    statuses,
)


def _stream(results: dict[str, str]) -> bytes:
    """A subunit v2 stream as ``tempest run --subunit`` writes it."""
    output = io.BytesIO()
    writer = subunit.StreamResultToBytes(output)
    for test, status in results.items():
        writer.status(test_id=test, test_status="inprogress")
        writer.status(test_id=test, test_status=status)
    return output.getvalue()


STOCK = {"tempest.api.compute.A.test_one[id-1,smoke]": "success",
         "tempest.api.compute.A.test_two[id-2]": "skip",
         "tempest.api.compute.B.test_three[id-3]": "success"}


def test_statuses_drop_the_attributes_and_the_in_progress_events():
    assert statuses(_stream(STOCK)) == {"tempest.api.compute.A.test_one": "success",
                                        "tempest.api.compute.A.test_two": "skip",
                                        "tempest.api.compute.B.test_three": "success"}


def test_counts_and_a_failed_class_fixture_are_reported():
    results = statuses(_stream({**STOCK, "setUpClass (tempest.api.compute.C)": "fail",
                                "tempest.api.compute.D.test_x": "xfail"}))
    assert counts(results) == {"success": 3, "skip": 1, "fail": 1}
    assert fixture_failures(results) == ["tempest.api.compute.C"]


def test_two_runs_side_by_side_name_each_test_that_differs():
    trusted = {**STOCK, "tempest.api.compute.B.test_three[id-3]": "fail",
               "tempest.api.compute.B.test_four[id-4]": "success"}
    runs = {"stock": statuses(_stream(STOCK)), "trusted": statuses(_stream(trusted))}
    assert differences(runs["stock"], runs["trusted"]) == [
        ("tempest.api.compute.B.test_four", "absent", "success"),
        ("tempest.api.compute.B.test_three", "success", "fail")]
    table = comparison(runs).splitlines()
    assert table[0].split() == ["outcome", "stock", "trusted"]
    assert table[1].split() == ["success", "2", "2"]
    assert table[2].split() == ["fail", "0", "1"]
    assert table[4].split() == ["total", "3", "4"]
    assert "tests whose result differs: 2" in table
    assert "  tempest.api.compute.B.test_three: stock success, trusted fail" in table


def test_identical_runs_have_no_differences():
    runs = {"stock": statuses(_stream(STOCK)), "trusted": statuses(_stream(STOCK))}
    assert comparison(runs).splitlines()[-1] == "tests whose result differs: 0"
