"""The partition checks judge the facts flatten_partition gathered batch by batch (KeyFacts), not the files read
back: across batch boundaries they give exactly what reading the whole written files gives (duplicates in two
batches, a child row whose response is in another batch, an orphan). Not timed."""

import copy

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import cg_dagster.lib.tables as tables_module
from cg_dagster.customergauge.checks import PARTITION_CHECK_SPECS, partition_check_results
from cg_dagster.lib.lake import Lake
from cg_dagster.lib.schemas import TABLES
from cg_dagster.lib.sync import RAW_TABLE
from cg_dagster.lib.tables import flatten_partition
from cg_dagster_tests._fixtures_flatten import P, sandbox_records, write_raw


def _from_files(done) -> dict:
    """The check figures computed from the whole written files (how the checks worked before KeyFacts)."""
    responses = pq.read_table(done.paths["responses"], columns=["number_customergauge", "fetched_at", "nps"])
    numbers = responses.group_by("number_customergauge").aggregate(
        [("fetched_at", "count"), ("fetched_at", "count_distinct")]
    )
    repeated = numbers.filter(pc.greater(numbers["fetched_at_count"], 1))
    same_fetch = repeated.filter(pc.not_equal(repeated["fetched_at_count"], repeated["fetched_at_count_distinct"]))
    nps = responses["nps"]
    figures = {
        "duplicated_numbers": repeated.num_rows,
        "duplicated_within_one_fetch": same_fetch.num_rows,
        "duplicated_examples": sorted(repeated["number_customergauge"].to_pylist()),
        "out_of_range": pc.sum(pc.or_(pc.less(nps, 0), pc.greater(nps, 10))).as_py() or 0,
    }
    parents = responses["number_customergauge"].combine_chunks()
    for table in ("response_drivers", "response_tags", "response_questions", "response_properties"):
        children = pq.read_table(done.paths[table], columns=["number_customergauge"])["number_customergauge"]
        figures[table] = pc.unique(children.filter(pc.invert(pc.is_in(children, value_set=parents)))).to_pylist()
    return figures


def _from_checks(lake: Lake, done) -> dict:
    results = {
        r.check_name: r.metadata
        for r in partition_check_results(lake, P, done, {spec.key for spec in PARTITION_CHECK_SPECS})
    }
    unique = results["responses_number_customergauge_unique"]
    figures = {
        "duplicated_numbers": unique["duplicated_numbers"].value,
        "duplicated_within_one_fetch": unique["duplicated_within_one_fetch"].value,
        "duplicated_examples": sorted(unique["examples"].value),
        "out_of_range": results["responses_nps_in_range"]["out_of_range"].value,
    }
    for table in ("response_drivers", "response_tags", "response_questions", "response_properties"):
        metadata = results[f"{table}_rows_point_to_responses"]
        assert metadata["orphan_numbers"].value == len(metadata["examples"].value)  # fewer than 20 here
        figures[table] = metadata["examples"].value
    return figures


def test_checks_across_batches_equal_the_checks_of_the_whole_files(tmp_path, monkeypatch):
    monkeypatch.setattr(tables_module, "RAW_BATCH_ROWS", 300)  # 9 batches
    records = list({r["number_customergauge"]: r for r in reversed(sandbox_records(5_000))}.values())[::-1]
    assert len(records) > 2_400  # the sandbox renders each record twice (two shapes): once here
    other_batch, same_page = copy.deepcopy(records[5]), copy.deepcopy(records[100])
    records.append(other_batch)  # a later page, another batch: a second fetch of it (WARN)
    records.insert(101, same_page)  # the same page of 250 rows: one fetch holds it twice (ERROR)
    real = tables_module.flatten_raw
    seen: list[pa.Table] = []

    def crossing(raw, **kwargs):
        """Each batch's tags also get the first tag row of the batch before (its response is in that batch);
        the fourth batch's nps gets one 11 and its tags one row pointing to no response (number + 1)."""
        flat = real(raw, **kwargs)
        tags = flat.tables["response_tags"]
        extra = [seen[-1].slice(0, 1)] if seen else []
        if len(seen) == 3:
            stray = tags.slice(0, 1)
            shifted = pc.add(stray["number_customergauge"], 1)
            extra.append(stray.set_column(0, stray.schema.field(0), shifted))
            responses = flat.tables["responses"]
            nps = pa.array([11] + responses["nps"].to_pylist()[1:], pa.int8())
            flat.tables["responses"] = responses.set_column(responses.schema.get_field_index("nps"), "nps", nps)
        seen.append(tags)
        flat.tables["response_tags"] = pa.concat_tables([tags, *extra]).cast(TABLES["response_tags"].arrow_schema)
        return flat

    monkeypatch.setattr(tables_module, "flatten_raw", crossing)
    lake = Lake(tmp_path)
    write_raw(lake, records)
    done = flatten_partition(lake, P)
    expected = _from_files(done)
    assert _from_checks(lake, done) == expected
    stray = seen[3]["number_customergauge"][0].as_py() + 1
    assert expected["response_tags"] == [stray]
    assert expected["duplicated_examples"] == sorted(
        [records[5]["number_customergauge"], records[100]["number_customergauge"]]
    )
    assert (expected["duplicated_within_one_fetch"], expected["out_of_range"]) == (1, 1)
    assert expected["response_drivers"] == expected["response_questions"] == expected["response_properties"] == []


def test_an_empty_partition_passes_every_check(tmp_path):
    lake = Lake(tmp_path)
    lake.write_table(lake.partition_path(RAW_TABLE, P), TABLES[RAW_TABLE].arrow_schema.empty_table())
    done = flatten_partition(lake, P)
    results = list(partition_check_results(lake, P, done, {spec.key for spec in PARTITION_CHECK_SPECS}))
    assert len(results) == len(PARTITION_CHECK_SPECS) and all(r.passed for r in results)
