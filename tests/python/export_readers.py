"""Runs a Python snippet of docs/export.md and reports what each reader in it read.

Usage: export_readers.py DOC SNIPPET NAME=VALUE...

The snippet is the ```python block after `<!-- snippet: SNIPPET -->` in DOC. Each
NAME=VALUE replaces the value of a top-level `NAME = ...` line of the snippet (the
folder, the server, the range), so the documented code runs as written otherwise.
Afterwards every pandas DataFrame, pyarrow Table and DuckDB relation the snippet left
is summarised on stdout as JSON: {name: {"rows", "kinds": {column: kind}, "groups":
{"metric=<m>/date=<d>": [rows, sum]}, "date_mismatches"}}, where the sum is of `value`
(raw readings) or `count` (rollups) and the date of a group is the UTC day of `time` (or
`bucket`). A kind is timestamp_utc, timestamp_naive, float64, int64, string, date or the
reader's own type name.
"""

import datetime
import json
import re
import sys

import duckdb
import pandas as pd
import pyarrow as pa

doc, snippet, *assignments = sys.argv[1:]
text = open(doc, encoding="utf-8").read()
match = re.search(r"<!-- snippet: " + re.escape(snippet) + r" -->\s*```python\n(.*?)```", text, re.S)
if not match:
    sys.exit(f"{doc}: no python snippet {snippet!r}")
code = match.group(1)
for item in assignments:
    name, value = item.split("=", 1)
    code, n = re.subn(r"^" + re.escape(name) + r" = .*$", f"{name} = {value!r}", code, flags=re.M)
    if n != 1:
        sys.exit(f"snippet {snippet!r} has {n} top-level assignments of {name}")
namespace = {"__name__": "snippet"}
exec(compile(code, f"docs/export.md:{snippet}", "exec"), namespace)


def arrow_kind(t):
    if pa.types.is_dictionary(t):
        return arrow_kind(t.value_type)
    if pa.types.is_timestamp(t):
        return "timestamp_utc" if t.tz in ("UTC", "+00:00", "Etc/UTC") else f"timestamp_{t.tz or 'naive'}"
    if pa.types.is_float64(t):
        return "float64"
    if pa.types.is_int64(t):
        return "int64"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_date(t):
        return "date"
    return str(t)


def pandas_kind(series):
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return pandas_kind(pd.Series(dtype.categories))
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "timestamp_utc" if str(dtype.tz) == "UTC" else f"timestamp_{dtype.tz}"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "timestamp_naive"
    if pd.api.types.is_float_dtype(dtype) and dtype.itemsize == 8:
        return "float64"
    if pd.api.types.is_integer_dtype(dtype) and dtype.itemsize == 8:
        return "int64"
    if pd.api.types.is_string_dtype(dtype):
        values = series.dropna()
        if len(values) and all(isinstance(v, datetime.date) for v in values):
            return "date"
        if all(isinstance(v, str) for v in values):
            return "string"
    return str(dtype)


DUCK = {"TIMESTAMP WITH TIME ZONE": "timestamp_utc", "TIMESTAMP": "timestamp_naive",
        "DOUBLE": "float64", "BIGINT": "int64", "VARCHAR": "string", "DATE": "date"}


def summary(df, kinds):
    when = "time" if "time" in df.columns else "bucket"
    figure = "value" if "value" in df.columns else "count"
    times = pd.to_datetime(df[when], utc=True)
    day = times.dt.strftime("%Y-%m-%d")
    # One partition file read alone has no metric column: "?".
    metric = df["metric"].astype(str) if "metric" in df.columns else pd.Series("?", index=df.index)
    groups = {}
    for (metric, d), rows in df.assign(_day=day, _metric=metric).groupby(["_metric", "_day"]):
        groups[f"metric={metric}/date={d}"] = [len(rows), float(rows[figure].astype(float).sum())]
    mismatches = 0
    if "date" in df.columns:
        mismatches = int((df["date"].astype(str) != day).sum())
    return {"rows": len(df), "kinds": kinds, "groups": groups, "date_mismatches": mismatches}


report = {}
for name, value in namespace.items():
    if name.startswith("_"):
        continue
    if isinstance(value, pd.DataFrame):
        kinds = {c: pandas_kind(value[c]) for c in value.columns}
        report[name] = summary(value, kinds)
    elif isinstance(value, pa.Table):
        kinds = {f.name: arrow_kind(f.type) for f in value.schema}
        report[name] = summary(value.to_pandas(), kinds)
    elif isinstance(value, duckdb.DuckDBPyRelation):
        kinds = {c: DUCK.get(str(t), str(t)) for c, t in zip(value.columns, value.types)}
        report[name] = summary(value.df(), kinds)
print(json.dumps(report))
