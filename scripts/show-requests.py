#!/usr/bin/env python3
"""Prints what the sample API received: one line per request with its traceparent."""
import json
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1]) as response:
    for r in json.load(response):
        print(f"  {r['method']:5} {r['path']:28} {r['status']}  traceparent {r['traceparent']}")
