"""Parses a metrics exposition with the official Prometheus Python parsers and prints the
samples as JSON: [{"family", "type", "name", "labels", "value"}, ...].

usage: parse.py text|openmetrics FILE

`text` uses prometheus_client.parser (Prometheus text format 0.0.4), `openmetrics` uses
prometheus_client.openmetrics.parser (strict OpenMetrics 1.0: # EOF, counter suffixes, ...).
Any parse error exits non-zero with the parser's message.
"""
import json
import math
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families as text_families


def main():
    kind, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parse = openmetrics_families if kind == "openmetrics" else text_families
    out = []
    for family in parse(text):
        for s in family.samples:
            value = s.value
            if isinstance(value, float) and math.isinf(value):
                value = "+Inf" if value > 0 else "-Inf"
            out.append(
                {
                    "family": family.name,
                    "type": family.type,
                    "name": s.name,
                    "labels": dict(s.labels),
                    "value": value,
                }
            )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
