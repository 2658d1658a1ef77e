"""Tiny stdlib-only client shared by the LMS adapters: posts answers to layerscope's /v1/grade.

Configuration (a JSON file next to the adapter, or environment variables):
  url           LAYERSCOPE_URL        the service, e.g. http://layerscope.course.svc:8080
  api_key       LAYERSCOPE_API_KEY    sent as "Authorization: Bearer ..." when set
  problem_set   (or "questions")      what to grade: "course", or a list of questions
  reveal        none | hints | answers
  strict_variables
"""
import json
import os
import urllib.error
import urllib.request


def load_config(path):
    cfg = {}
    if path and os.path.exists(path):
        with open(path) as f:
            cfg = json.load(f)
    cfg.setdefault("url", os.environ.get("LAYERSCOPE_URL", "http://127.0.0.1:8080"))
    if os.environ.get("LAYERSCOPE_API_KEY"):
        cfg["api_key"] = os.environ["LAYERSCOPE_API_KEY"]
    return cfg


def read_answers(path):
    """answers.json ({id: answer}) or answers.txt ("id: answer" per line, # comments)."""
    if path.endswith(".json"):
        with open(path) as f:
            return json.load(f)
    answers = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and ":" in line:
                key, value = line.split(":", 1)
                answers[key.strip()] = value.strip()
    return answers


def grade(cfg, answers, output, timeout=120):
    body = {"answers": answers, "output": output, "reveal": cfg.get("reveal", "hints"),
            "strict_variables": cfg.get("strict_variables", False)}
    if "questions" in cfg:
        body["questions"] = cfg["questions"]
    else:
        body["problem_set"] = cfg.get("problem_set", "course")
    headers = {"content-type": "application/json"}
    if cfg.get("api_key"):
        headers["authorization"] = "Bearer " + cfg["api_key"]
    req = urllib.request.Request(cfg["url"].rstrip("/") + "/v1/grade", data=json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def describe_error(e):
    if isinstance(e, urllib.error.HTTPError):
        try:
            problem = json.loads(e.read())
            return f"the grading service answered {e.code}: {problem.get('detail', '')}"
        except Exception:  # noqa: BLE001
            return f"the grading service answered {e.code}"
    return f"the grading service could not be reached: {e}"
