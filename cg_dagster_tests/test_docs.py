"""The README's table reference is the contract's, every flattened column has lineage to the raw table, and the
README's response-rate query is the demo's."""

import importlib.util
from pathlib import Path

from cg_dagster.customergauge.assets import RAW_KEY
from cg_dagster.customergauge.metadata import column_lineage
from cg_dagster.lib import schema_doc
from cg_dagster.lib.schemas import TABLES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_match_the_contract():
    readme = README.read_text(encoding="utf-8")
    assert schema_doc.replace_block(readme) == readme, "run: python -m cg_dagster.lib.schema_doc --write"


def test_every_flattened_column_has_lineage_back_to_raw_responses():
    for name in ("responses", "response_drivers", "response_tags", "response_questions", "response_properties"):
        lineage = column_lineage(TABLES[name], RAW_KEY)
        assert set(lineage.deps_by_column) == {c.name for c in TABLES[name].columns}, name
    deps = column_lineage(TABLES["responses"], RAW_KEY).deps_by_column
    assert [d.column_name for d in deps["contact_first_name"]] == ["record_json.contact.first_name"]
    assert [d.column_name for d in deps["fetched_at"]] == ["fetched_at"]
    assert all(d.asset_key == RAW_KEY for deps_ in deps.values() for d in deps_)


def demo_module():
    """scripts/demo.py, loaded as a module (it is a script, not in a package)."""
    spec = importlib.util.spec_from_file_location("cg_demo", README.parent / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    return demo


def test_the_readme_response_rate_query_is_the_one_the_demo_runs():
    demo = demo_module()
    query = demo.RESPONSE_RATE_SQL.format(lake="demo_lake").strip()
    assert f"```sql\n{query}\n```" in README.read_text(encoding="utf-8")


def test_the_demo_leaves_the_shells_project_settings_out_of_its_runs():
    """An exported CG_ACCOUNTS_FILE made the demo's selection fail (the accounts' asset keys), and production
    credentials or CG_PARTITIONS_START would reach the sandbox's runs (found by the README trial)."""
    demo = demo_module()
    shell = {
        "PATH": "/usr/bin",
        "CG_ACCOUNTS_FILE": "/etc/cg/accounts.yaml",
        "CG_PARTITIONS_START": "2026-01-01",
        "CG_LAKE_ROOT": "s3://prod/lake",
        "CUSTOMERGAUGE_CLIENT_SECRET": "production-secret",
        "CUSTOMERGAUGE_REGION": "us",
    }
    env, left_out = demo.demo_env(shell, "http://127.0.0.1:9")
    assert left_out == [
        "CG_ACCOUNTS_FILE",
        "CG_LAKE_ROOT",
        "CG_PARTITIONS_START",
        "CUSTOMERGAUGE_CLIENT_SECRET",
        "CUSTOMERGAUGE_REGION",
    ]
    assert env == {
        "PATH": "/usr/bin",
        "CUSTOMERGAUGE_CLIENT_ID": "demo-client",
        "CUSTOMERGAUGE_CLIENT_SECRET": "demo-secret",
        "CUSTOMERGAUGE_API_BASE_URL": "http://127.0.0.1:9",
        "CUSTOMERGAUGE_AUTH_BASE_URL": "http://127.0.0.1:9",
        "CG_LAKE_ROOT": str(README.parent / "demo_lake"),
    }
