"""Stdlib-only client shared by the LMS adapters: posts a student's answers to layerscope's
/v1/grade, retrying what a rollout or a busy service answers, within a deadline.

Configuration (a JSON file next to the adapter, or environment variables):
  url              LAYERSCOPE_URL       the service, e.g. https://layerscope.example.edu
  api_key          LAYERSCOPE_API_KEY   sent as "Authorization: Bearer ..." when set
  problem_set      "course" (default), or
  questions        with a problem set: the ids or prefixes to grade (["p4.*"]); without one: question objects
  reveal           none | hints (default) | answers
  strict_variables, number_locale, partial_credit   passed on to /v1/grade
  time_budget      seconds for all tries together (default: each adapter's own)
"""
import json
import os
import time
import urllib.error
import urllib.request


class ConfigError(Exception):
    """The adapter's configuration is broken: the instructor's to fix, not the student's."""


class StudentFileError(Exception):
    """The student's answers file cannot be read: the student's to fix."""


class ServiceError(Exception):
    """The grading service did not answer in time, or refused the request."""


def load_config(path):
    cfg = {}
    if path and os.path.exists(path):
        try:
            with open(path, encoding="utf-8-sig") as f:
                cfg = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{os.path.basename(path)} is not valid JSON: {e}") from e
        if not isinstance(cfg, dict):
            raise ConfigError(f"{os.path.basename(path)} must hold a JSON object")
    cfg.setdefault("url", os.environ.get("LAYERSCOPE_URL", "http://127.0.0.1:8080"))
    if os.environ.get("LAYERSCOPE_API_KEY"):
        cfg["api_key"] = os.environ["LAYERSCOPE_API_KEY"]
    if not isinstance(cfg["url"], str) or not cfg["url"].startswith(("http://", "https://")):
        raise ConfigError(f"url must be an http(s) address, not {cfg['url']!r}")
    return cfg


def parse_answers_text(text, name="answers.txt"):
    """answers.json ({id: answer}) or answers.txt ("id: answer" per line, # comments), BOM or not."""
    text = text.lstrip("\ufeff")
    if name.endswith(".json"):
        try:
            answers = json.loads(text)
        except json.JSONDecodeError as e:
            raise StudentFileError(f"{name} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from e
        if not isinstance(answers, dict):
            raise StudentFileError(f'{name} must be one JSON object: {{"question id": "answer", ...}}')
        return answers
    answers = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            raise StudentFileError(f'{name}, line {n}: expected "question id: answer", got {line[:60]!r}')
        key, value = line.split(":", 1)
        answers[key.strip()] = value.strip()
    return answers


def read_answers(path):
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise StudentFileError(f"{os.path.basename(path)} could not be read: {e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StudentFileError(f"{os.path.basename(path)} is not UTF-8 text (byte {e.start})") from e
    return parse_answers_text(text, os.path.basename(path))


RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def grade(cfg, answers, output, budget=60.0, questions=None):
    """POSTs to /v1/grade; retries 408/429/5xx and refused connections, waiting as Retry-After
    says (capped by what is left of `budget` seconds), and raises ServiceError when the budget
    is spent. A 4xx other than those is raised at once (the request itself is wrong)."""
    body = {"answers": answers, "output": output, "reveal": cfg.get("reveal", "hints")}
    for key in ("strict_variables", "number_locale", "partial_credit", "seed"):
        if key in cfg:
            body[key] = cfg[key]
    selection = questions if questions is not None else cfg.get("questions")
    if selection and all(isinstance(q, dict) for q in selection):
        body["questions"] = selection
    else:
        body["problem_set"] = cfg.get("problem_set", "course")
        if selection:
            body["questions"] = selection
    headers = {"content-type": "application/json"}
    if cfg.get("api_key"):
        headers["authorization"] = "Bearer " + cfg["api_key"]
    data = json.dumps(body).encode()
    deadline = time.monotonic() + float(cfg.get("time_budget", budget))
    attempt, last = 0, "no attempt was made"
    while True:
        attempt += 1
        left = deadline - time.monotonic()
        if left <= 0.5:
            raise ServiceError(f"the grading service did not answer within the time allowed ({attempt - 1} tries; last: {last})")
        req = urllib.request.Request(cfg["url"].rstrip("/") + "/v1/grade", data=data, headers=headers)
        wait = min(2.0 ** attempt / 4, 8.0)
        try:
            with urllib.request.urlopen(req, timeout=max(0.5, left - 0.25)) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = problem_detail(e)
            if e.code not in RETRY_STATUSES:
                raise ServiceError(f"the grading service refused the request ({e.code}: {detail})") from e
            last = f"{e.code} {detail}"
            after = e.headers.get("retry-after") if e.headers else None
            if after and after.strip().isdigit():
                wait = float(after)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last = str(getattr(e, "reason", e))
        left = deadline - time.monotonic()
        if wait >= left - 0.5:
            raise ServiceError(f"the grading service did not answer within the time allowed ({attempt} tries; last: {last})")
        time.sleep(wait)


def problem_detail(e):
    try:
        return json.loads(e.read()).get("detail", "")
    except Exception:  # noqa: BLE001
        return ""
