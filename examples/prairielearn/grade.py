#!/usr/bin/env python3
"""PrairieLearn external grader: reads /grade/data/data.json (the student's submitted_answers,
keyed by layerscope question ids), grades them with layerscope and writes
/grade/results/results.json. Configure with /grade/serverFilesCourse/layerscope.json or the
environment (LAYERSCOPE_URL, LAYERSCOPE_API_KEY). GRADE_ROOT overrides /grade (for testing)."""
import json
import os
import sys

ROOT = os.environ.get("GRADE_ROOT", "/grade")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "serverFilesCourse"))
import layerscope_client as client  # noqa: E402


def main():
    out_dir = os.path.join(ROOT, "results")
    os.makedirs(out_dir, exist_ok=True)
    cfg = client.load_config(os.path.join(ROOT, "serverFilesCourse", "layerscope.json"))
    with open(os.path.join(ROOT, "data", "data.json")) as f:
        data = json.load(f)
    answers = data.get("submitted_answers", {})
    try:
        result = client.grade(cfg, answers, "prairielearn")
    except Exception as e:  # noqa: BLE001
        result = {"gradable": False, "score": 0, "message": client.describe_error(e), "tests": []}
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
