"""Reads an OpenMetrics exposition on stdin with the reference parser
(prometheus_client) and prints every sample as JSON: [name, labels, value].
A malformed exposition raises, so the test fails."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps(samples))
