#!/usr/bin/env python3
"""PrairieLearn external grader for layerscope questions.

PrairieLearn runs it in the question's externalGradingOptions.image with /grade laid out as:
  /grade/data/data.json          params, submitted_answers (form inputs; `_files` for uploads)
  /grade/student/                files from pl-file-upload / pl-file-editor (answers.txt, answers.json)
  /grade/serverFilesCourse/      the course's serverFilesCourse entries listed in info.json
  /grade/results/results.json    what this writes
Configuration: serverFilesCourse/layerscope/layerscope.json (url, api_key, reveal, ...) or the
environment (LAYERSCOPE_URL, LAYERSCOPE_API_KEY, LAYERSCOPE_TIME_BUDGET). The question's server.py
names what it asks in data["params"]["layerscope"]: "questions" (ids or prefixes of the problem
set, graded even when left blank) and "names" ({answers-name: question id}, for inputs whose names
cannot hold dots). Only those are graded. The grading service must be reachable: set
"enableNetworking": true in info.json. GRADE_ROOT overrides /grade (for testing)."""
import base64
import json
import os
import sys

ROOT = os.environ.get("GRADE_ROOT", "/grade")
HERE = os.path.dirname(os.path.abspath(__file__))
for p in (HERE, os.path.join(HERE, ".."), os.path.join(ROOT, "serverFilesCourse", "layerscope"), os.path.join(ROOT, "serverFilesCourse")):
    sys.path.insert(0, p)
import layerscope_client as client  # noqa: E402

# PrairieLearn's externalGradingOptions.timeout defaults to 30 s: answer before it ends the job.
DEFAULT_BUDGET = 20.0


def not_gradable(message):
    return {"gradable": False, "score": 0, "message": message, "tests": []}


def main():
    out_dir = os.path.join(ROOT, "results")
    os.makedirs(out_dir, exist_ok=True)
    try:
        result = run()
    except Exception as e:  # noqa: BLE001  (never leave PrairieLearn without results)
        result = not_gradable(f"The grader failed ({type(e).__name__}: {e}). This is not your fault: tell your instructor.")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(result, f, indent=2)


def config():
    for p in (os.path.join(ROOT, "serverFilesCourse", "layerscope", "layerscope.json"), os.path.join(ROOT, "serverFilesCourse", "layerscope.json")):
        if os.path.exists(p):
            return client.load_config(p)
    return client.load_config(None)


def file_answers(submitted):
    """Answers from uploaded or edited files: /grade/student first, else submitted_answers._files."""
    answers = {}
    student = os.path.join(ROOT, "student")
    names = [n for n in ("answers.json", "answers.txt") if os.path.exists(os.path.join(student, n))]
    for n in names:
        answers.update(client.read_answers(os.path.join(student, n)))
    if not names:
        for f in submitted.get("_files") or []:
            name = os.path.basename(str(f.get("name", "")))
            if name in ("answers.json", "answers.txt"):
                try:
                    text = base64.b64decode(f.get("contents", "")).decode("utf-8")
                except (ValueError, UnicodeDecodeError) as e:
                    raise client.StudentFileError(f"{name} could not be decoded: {e}") from e
                answers.update(client.parse_answers_text(text, name))
    return answers


def run():
    try:
        cfg = config()
    except client.ConfigError as e:
        return not_gradable(f"The grader is misconfigured ({e}). This is not your fault: tell your instructor.")
    with open(os.path.join(ROOT, "data", "data.json"), encoding="utf-8") as f:
        data = json.load(f)
    submitted = data.get("submitted_answers") or {}
    params = (data.get("params") or {}).get("layerscope") or {}
    names = params.get("names") or {}
    try:
        answers = file_answers(submitted)
    except client.StudentFileError as e:
        return not_gradable(f"Your file could not be read: {e}. Fix it and submit again.")
    for key, value in submitted.items():
        if key.startswith("_"):  # PrairieLearn's own entries (_files), never question ids
            continue
        answers[names.get(key, key)] = value
    questions = params.get("questions") or cfg.get("questions") or sorted(set(names.values())) or None
    # a generated variant names its problem set and seed (POST /v1/variants)
    for key in ("problem_set", "seed"):
        if key in params:
            cfg[key] = params[key]
    budget = float(os.environ.get("LAYERSCOPE_TIME_BUDGET", cfg.get("time_budget", DEFAULT_BUDGET)))
    cfg["time_budget"] = budget
    try:
        return client.grade(cfg, answers, "prairielearn", budget=budget, questions=questions)
    except client.ServiceError as e:
        return not_gradable(f"Your answers were not graded: {e}. This is not your fault; submit again in a minute.")


if __name__ == "__main__":
    main()
