# layerscope grader for a Moodle CodeRunner question (question type python3, Grader
# "TemplateGrader", "Is combinator" checked). Paste this file as the question's template and set
# the template parameters, e.g.
#   {"url": "https://layerscope.example.edu", "api_key": "...", "questions": ["p4.pool2.rows", "p4.pool2.cols"], "reveal": "hints"}
# The student's answer box holds "question id: answer" lines. The Jobe server must be allowed to
# reach the service: Jobe blocks outbound connections by default (see the README).
import json
import time
import urllib.error
import urllib.request

STUDENT_ANSWER = """{{ STUDENT_ANSWER | e('py') }}"""
PARAMS = json.loads("""{{ QUESTION.parameters | json_encode | e('py') }}""" or "{}")
BUDGET = float(PARAMS.get("time_budget", 8))  # Jobe's run-time limit is short


def result(fraction, message, rows=None):
    out = {"fraction": fraction, "prologuehtml": "<p>" + message.replace("&", "&amp;").replace("<", "&lt;") + "</p>"}
    if rows:
        out["testresults"] = rows
    return out


def parse(text):
    answers, bad = {}, []
    for n, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            bad.append(n)
            continue
        key, value = line.split(":", 1)
        answers[key.strip()] = value.strip()
    return answers, bad


def grade():
    answers, bad = parse(STUDENT_ANSWER)
    if bad:
        return result(0, "Lines %s are not of the form 'question id: answer'. Fix them and check again." % ", ".join(map(str, bad)))
    body = {"problem_set": PARAMS.get("problem_set", "course"), "answers": answers, "output": "moodle_coderunner",
            "reveal": PARAMS.get("reveal", "hints")}
    for key in ("questions", "strict_variables", "number_locale", "partial_credit"):
        if key in PARAMS:
            body[key] = PARAMS[key]
    headers = {"content-type": "application/json"}
    if PARAMS.get("api_key"):
        headers["authorization"] = "Bearer " + PARAMS["api_key"]
    deadline = time.monotonic() + BUDGET
    last = ""
    while time.monotonic() < deadline - 0.5:
        req = urllib.request.Request(PARAMS.get("url", "http://127.0.0.1:8080").rstrip("/") + "/v1/grade",
                                     data=json.dumps(body).encode(), headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=max(0.5, deadline - time.monotonic())) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            if e.code not in (408, 429, 500, 502, 503, 504):
                return result(0, "The grading service refused the request (%d). Tell your teacher." % e.code)
            last = "HTTP %d" % e.code
            wait = float(e.headers.get("retry-after", "1") or 1)
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
            wait = 1.0
        if time.monotonic() + wait >= deadline - 0.5:
            break
        time.sleep(wait)
    return result(0, "Your answer was not graded: the grading service did not answer in time (%s). This is not your fault: check again in a minute." % last)


print(json.dumps(grade()))
