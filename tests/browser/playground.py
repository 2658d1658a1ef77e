"""Drives the playground page at `/` in Debian's headless Chromium (selenium + chromedriver, no
browser download) through every tab, and checks what the page shows against the API's own answers
to the same requests, fetched here with urllib:

- receptive field (vgg_stem, inception_reduced): the per-layer formulas, and the input cells the
  drawing marks (read back from the SVG) for units typed in and clicked on the output grid;
- complexity (inception_reduced): every cell of the table, the totals, a tool profile, sorting,
  collapsing subtotal rows, the bar chart, and the CSV download;
- gradients (the sigmoid MLP): the verdict, every layer's and activation's numbers, the chart's
  points and the sweep;
- momentum (the documented witness): the trajectories, the pairs and the explanation;
- grade: the score and every question's feedback, and a generated variant's text and key;
- the spec editor: an invalid field is shown at its line (the problem's JSON pointer), a JSON
  syntax error at its own line;
- permalinks reproduce the view; the tabs work from the keyboard; with API keys on, the page asks
  for a key and works once given one.

Every screenshot is preceded by axe-core's WCAG 2 A/AA check (no serious or critical violation);
LAYERSCOPE_AXE names axe.min.js (scripts/browser-env.sh installs it from npm).

LAYERSCOPE_BROWSER=firefox runs the same checks in Firefox ESR through geckodriver instead.

Usage: playground.py BASE_URL ARTIFACT_DIR [KEYED_BASE_URL KEY]. Screenshots (one per tab),
timings.json and accessibility.json (every violation axe found, by view) go to ARTIFACT_DIR. Exits non-zero on the first mismatch, with what differed.
"""
import atexit
import base64
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

BASE, OUT = sys.argv[1], sys.argv[2]
BROWSER = os.environ.get("LAYERSCOPE_BROWSER", "chromium")
assert BROWSER in ("chromium", "firefox"), BROWSER
FIREFOX = BROWSER == "firefox"
KEYED = sys.argv[3:5] if len(sys.argv) >= 5 else None
os.makedirs(OUT, exist_ok=True)
DOWNLOADS = os.path.join(OUT, "downloads")
os.makedirs(DOWNLOADS, exist_ok=True)
PROFILES = tempfile.mkdtemp(prefix="layerscope-browser-")
atexit.register(shutil.rmtree, PROFILES, True)
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        try:
            d.save_screenshot(os.path.join(OUT, "failure.png"))
            with open(os.path.join(OUT, "failure-console.json"), "w") as f:
                json.dump(console(), f, indent=1)
        except Exception:
            pass
        raise AssertionError(what)


def api(path, body=None, base=BASE, key=None, raw=False):
    req = urllib.request.Request(base + path, data=None if body is None else json.dumps(body).encode())
    if body is not None:
        req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=120) as r:
        text = r.read().decode()
    return text if raw else json.loads(text)


def browser():
    if FIREFOX:
        o = webdriver.FirefoxOptions()
        o.binary_location = "/usr/bin/firefox-esr"
        o.add_argument("-headless")
        for k, v in {"browser.download.folderList": 2, "browser.download.dir": DOWNLOADS, "browser.download.useDownloadDir": True,
                     "browser.helperApps.neverAsk.saveToDisk": "text/csv,text/markdown", "browser.download.always_ask_before_handling_new_types": False}.items():
            o.set_preference(k, v)
        d = webdriver.Firefox(service=webdriver.FirefoxService(os.environ.get("GECKODRIVER", "geckodriver")), options=o)
        d.set_window_size(1400, 1100)
        return d
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
              "--disable-component-update --disable-sync --disable-dev-shm-usage --window-size=1400,1100").split():
        o.add_argument(a)
    o.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='layerscope-chromium-', dir=PROFILES)}")
    o.add_experimental_option("prefs", {"download.default_directory": DOWNLOADS, "download.prompt_for_download": False})
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": DOWNLOADS})
    return d


def console():
    """The browser's console messages (Chromium only: geckodriver has no log endpoint)."""
    return [] if FIREFOX else d.get_log("browser")


d = browser()
wait = WebDriverWait(d, 60)
by_id = lambda i: d.find_element(By.ID, i)


def open_page(url):
    d.get(url)
    wait.until(lambda _: d.execute_script("return document.body.dataset.ready === '1'"))


def run_and_wait(button_id, status):
    """Clicks a run button and waits until the tab's status line says ok or error."""
    d.execute_script(f"document.querySelector('#{status}').className = 'status'")
    by_id(button_id).click()
    try:
        wait.until(lambda _: d.execute_script(
            f"const s = document.querySelector('#{status}'); return s.classList.contains('ok') || s.classList.contains('error')"))
    except Exception:
        # the screenshot and the console, as a failed check leaves them
        text = d.execute_script("return document.querySelector('#' + arguments[0]).textContent", status)
        check(False, f"{button_id}: the status never said ok or error: {text!r}")
    return d.execute_script(f"return document.querySelector('#{status}').className")


def status_of(tab):
    return d.execute_script(f"return document.querySelector('#panel-{tab} .status').className")


def tab(name):
    by_id(f"tab-{name}").click()
    check(by_id(f"tab-{name}").get_attribute("aria-selected") == "true", f"tab {name} selected")


def set_spec(text):
    area = by_id("spec")
    d.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))", area, text)


def pick_model(name):
    Select(by_id("model-picker")).select_by_value(name)


AXE = open(os.environ["LAYERSCOPE_AXE"]).read()
axe_report = {}


def accessible(name):
    """axe-core's WCAG 2 A/AA rules on the page as it is now: no serious or critical violation."""
    d.execute_script(AXE)
    result = d.execute_async_script("""const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}}).then(r => done(
          r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))),
          e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]))""")
    axe_report[name] = result
    bad = [v for v in result if v["impact"] in ("serious", "critical")]
    check(not bad, f"accessibility of {name}: {json.dumps(bad, indent=1)}")


def shot(name):
    """A full-page screenshot (the window grown to the document's height for it), after the accessibility check."""
    accessible(name)
    height = d.execute_script("return Math.min(4000, document.documentElement.scrollHeight)")
    d.set_window_size(1400, max(1100, height + 100))
    d.save_screenshot(os.path.join(OUT, f"{name}.png"))
    d.set_window_size(1400, 1100)


def expand(ranges):
    return {v for a, b in ranges for v in range(a, b + 1)}


def drawn_cells(grid="#rf-input-grid"):
    rects = d.execute_script(
        "return [...document.querySelectorAll(arguments[0] + ' .rf-cell')].map(r => [r.dataset.rows, r.dataset.cols])", grid)
    cells = set()
    for rows, cols in rects:
        r0, r1 = map(int, rows.split(","))
        c0, c1 = map(int, cols.split(","))
        cells |= {(r, c) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)}
    return cells


def check_rf_table(ref):
    """Every layer's row shows the API's formulas and sizes."""
    for layer in ref["layers"]:
        row = d.find_element(By.CSS_SELECTOR, f"#rf-table tr[data-path='{layer['path']}']")
        rf = layer["receptive_field"]
        check(row.find_element(By.CSS_SELECTOR, "[data-field=rows]").text == rf["height"]["text"], f"rows formula of {layer['path']}")
        check(row.find_element(By.CSS_SELECTOR, "[data-field=cols]").text == rf["width"]["text"], f"cols formula of {layer['path']}")
        check(row.find_element(By.CSS_SELECTOR, "[data-field=size]").text == f"{rf['height']['size']}×{rf['width']['size']}", f"size of {layer['path']}")


def show_unit(status, layer, index, channel=None):
    """Picks `layer` in the table (None: keep the picked one), types the unit's indices, shows its field."""
    if layer is not None:
        d.find_element(By.CSS_SELECTOR, f"#rf-table tr[data-path='{layer}'] button").click()
    fields = [(by_id(f"rf-index-{k}"), v) for k, v in enumerate(index)] + ([(by_id("rf-channel"), channel)] if channel is not None else [])
    for f, v in fields:
        f.clear()
        f.send_keys(str(v))
    check(run_and_wait("rf-unit-run", status).endswith("ok"), f"unit {index} of {layer} shown")


def api_cells(position):
    """The input cells the API says the unit depends on."""
    return {(r, c) for r in expand(position["input_rows"]) for c in expand(position["input_cols"])}


def status_id(tab_id):
    d.execute_script(f"document.querySelector('#panel-{tab_id} .status').id = 'status-{tab_id}'")
    return f"status-{tab_id}"


# ---- load time: the first load in a fresh browser, and a second one (revalidated by ETag) ----
timings = {}
NAV_JS = """
  const n = performance.getEntriesByType('navigation')[0];
  const ready = performance.getEntriesByName('layerscope-ready')[0];
  const assets = performance.getEntriesByType('resource').filter(r => r.name.includes('/ui/'));
  return {dom_content_loaded_ms: n.domContentLoadedEventEnd, load_ms: n.loadEventEnd, ready_ms: ready ? ready.startTime : null,
          asset_count: assets.length, asset_bytes: assets.reduce((a, r) => a + (r.encodedBodySize || 0), 0) + n.encodedBodySize};
"""
open_page(BASE + "/")
nav = d.execute_script(NAV_JS)
timings["first_load"] = nav
d.get("about:blank")
open_page(BASE + "/")
timings["second_load"] = d.execute_script(NAV_JS)
print(f"page load (ms from navigation start; 'ready' is after /v1/info and /v1/presets): {json.dumps(timings)}", flush=True)
check(nav["asset_count"] >= 10, f"the page loaded its modules: {nav}")
for e in console():
    check(e["level"] != "SEVERE", f"no console errors on load: {e}")

# ---- receptive field: vgg_stem, one-based, pool2 at (1, 56) typed in ----
sid = status_id("rf")
tab("rf")
Select(by_id("rf-base")).select_by_value("1")
check(run_and_wait("rf-run", sid).endswith("ok"), "rf ran")
check_rf_table(api("/v1/receptive-field", {"model": {"preset": "vgg_stem"}, "index_base": 1, "verify": True}))
check("4i-9 <= m <= 4i+6" in by_id("rf-table").text, "the course's pool2 formula is on the page")
show_unit(sid, "9", [1, 56])
want = api_cells(api("/v1/receptive-field", {"model": {"preset": "vgg_stem"}, "index_base": 1, "position": {"layer": "9", "index": [1, 56]}})["position"])
check(drawn_cells() == want, f"vgg_stem pool2 (1,56): drawn {len(drawn_cells())} cells, API {len(want)}")
check(len(want) == 100, "rows 1..10 x columns 215..224")
check(drawn_cells("#rf-input-zoom") == want, "the zoomed drawing marks the same cells")
facts = {e.get_attribute("data-fact"): e.text for e in d.find_elements(By.CSS_SELECTOR, "#rf-facts dd")}
check(facts.get("rows") == "1–10" and facts.get("cols") == "215–224" and facts.get("channels") == "1–3", f"facts {facts}")
check(facts["verification"].startswith("agrees"), f"libtorch verification shown: {facts['verification']}")
check(d.find_elements(By.CSS_SELECTOR, "#rf-input-grid .affine-box"), "the affine window is drawn")
shot("receptive-field")

# back to zero-based: the same unit again, renumbered; then click row 10, column 20 of pool2 (56x56)
d.execute_script(f"document.querySelector('#{sid}').className = 'status'")
Select(by_id("rf-base")).select_by_value("0")
wait.until(lambda _: status_of("rf").endswith("ok"))
check([by_id(f"rf-index-{k}").get_attribute("value") for k in range(2)] == ["0", "55"], "renumbered to zero-based")
check(drawn_cells() == {(r - 1, c - 1) for r, c in want}, "the same cells, zero-based")
d.execute_script(f"document.querySelector('#{sid}').className = 'status'")
grid = by_id("rf-output-grid")
w, hgt = grid.size["width"], grid.size["height"]
ActionChains(d).move_to_element_with_offset(grid, int((20.5 / 56) * w - w / 2), int((10.5 / 56) * hgt - hgt / 2)).click().perform()
wait.until(lambda _: status_of("rf").endswith("ok") or status_of("rf").endswith("error"))
picked = d.execute_script("const p = document.querySelector('#rf-output-grid .picked'); return [p.dataset.row, p.dataset.col]")
check(picked == ["10", "20"], f"clicked unit (10, 20), page picked {picked}")
check(drawn_cells() == api_cells(api("/v1/receptive-field", {"model": {"preset": "vgg_stem"}, "position": {"layer": "9", "index": [10, 20]}})["position"]), "the clicked unit's drawn cells equal the API's")

# ---- receptive field: inception_reduced, a border unit whose window reaches into the padding ----
pick_model("inception_reduced")
check(run_and_wait("rf-run", sid).endswith("ok"), "rf inception ran")
check_rf_table(api("/v1/receptive-field", {"model": {"preset": "inception_reduced"}, "verify": False}))
show_unit(sid, "0.branches.2.2", [0, 31])
pos = api("/v1/receptive-field", {"model": {"preset": "inception_reduced"}, "position": {"layer": "0.branches.2.2", "index": [0, 31]}})["position"]
check(drawn_cells() == api_cells(pos), "inception 5x5 branch border unit: drawn cells equal the API's")
check(pos["padding"]["rows_outside_image"] == 2, "the border unit's window reaches 2 rows into the padding")
check(d.find_elements(By.CSS_SELECTOR, "#rf-input-grid .padding-area"), "padding drawn")
shot("receptive-field-inception")

# ---- receptive field: a spec typed into the editor, with holes (dilation 3, then stride 2) ----
holes = {"input_shape": [2, 20, 20], "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "dilation": 3, "groups": 2},
                                                {"type": "conv2d", "out_channels": 4, "kernel_size": 2, "stride": 2, "groups": 2}]}
set_spec(json.dumps(holes, indent=2))
check(run_and_wait("rf-run", sid).endswith("ok"), "rf on a typed spec ran")
show_unit(sid, None, [3, 2], channel=3)
pos = api("/v1/receptive-field", {"model": holes, "position": {"layer": "1", "index": [3, 2], "channel": 3}})["position"]
want = api_cells(pos)
# by hand: layer 1 row 3 reads layer-0 rows 6..7; layer-0 row r reads input rows r, r+3, r+6
check(expand(pos["input_rows"]) == {6, 7, 9, 10, 12, 13}, f"rows with holes {pos['input_rows']}")
check(drawn_cells() == want, "the cells with holes are drawn exactly")
facts = {e.get_attribute("data-fact"): e.text for e in d.find_elements(By.CSS_SELECTOR, "#rf-facts dd")}
check(facts["channels"] == "1" and pos["input_channels"] == [[1, 1]], f"channel 3 of two 2-group convs reads input channel 1: {facts['channels']}")
check("holes inside the tight box: 2 rows, 2 columns" in by_id("rf-result").text, "holes counted")
shot("receptive-field-holes")

# ---- receptive field: a 1-D signal (conv1d, maxpool1d), its one axis and a unit by position ----
signal = {"input_shape": [2, 64], "layers": [{"type": "conv1d", "out_channels": 4, "kernel_size": 5, "stride": 2, "padding": 2},
                                            {"type": "maxpool1d", "kernel_size": 3, "stride": 2, "padding": 1},
                                            {"type": "conv1d", "out_channels": 4, "kernel_size": 3, "dilation": 2, "groups": 2}]}
set_spec(json.dumps(signal, indent=2))
check(run_and_wait("rf-run", sid).endswith("ok"), "rf on a 1-D signal ran")
ref = api("/v1/receptive-field", {"model": signal, "verify": False, "index_base": int(by_id("rf-base").get_attribute("value"))})
for layer in ref["layers"]:
    row = d.find_element(By.CSS_SELECTOR, f"#rf-table tr[data-path='{layer['path']}']")
    length = layer["receptive_field"]["length"]
    check(row.find_element(By.CSS_SELECTOR, "[data-field=rows]").text == length["text"], f"the signal's formula of {layer['path']}")
    check(row.find_element(By.CSS_SELECTOR, "[data-field=size]").text == str(length["size"]), f"the signal's size of {layer['path']}")
b = ref["index_base"]
show_unit(sid, "2", [3 + b])
pos = api("/v1/receptive-field", {"model": signal, "index_base": b, "position": {"layer": "2", "index": [3 + b]}})["position"]
facts = {e.get_attribute("data-fact"): e.text for e in d.find_elements(By.CSS_SELECTOR, "#rf-facts dd")}
check(facts.get("positions") and expand(pos["input_positions"]) == set(range(8 + b, 33 + b)), f"the unit's positions {facts.get('positions')}")
shot("receptive-field-signal")

# ---- receptive field: a volume (conv3d, maxpool3d), its depth column and a unit [k, i, j] ----
volume = {"input_shape": [2, 6, 12, 12], "layers": [{"type": "conv3d", "out_channels": 3, "kernel_size": [3, 5, 5], "stride": [1, 2, 2], "padding": [1, 2, 2]},
                                                  {"type": "maxpool3d", "kernel_size": [1, 3, 3], "stride": [1, 2, 2], "padding": [0, 1, 1]},
                                                  {"type": "conv3d", "out_channels": 2, "kernel_size": 3, "dilation": [2, 1, 1], "padding": [2, 1, 1]},
                                                  {"type": "conv_transpose3d", "out_channels": 2, "kernel_size": 3, "stride": 2}]}
set_spec(json.dumps(volume, indent=2))
check(run_and_wait("rf-run", sid).endswith("ok"), "rf on a volume ran")
ref = api("/v1/receptive-field", {"model": volume, "verify": False, "index_base": int(by_id("rf-base").get_attribute("value"))})
for layer in ref["layers"]:
    row = d.find_element(By.CSS_SELECTOR, f"#rf-table tr[data-path='{layer['path']}']")
    # (the transposed conv's ranges have floors: `rational`, with its depth too)
    rf = layer["receptive_field"] or layer["rational"]
    check(row.find_element(By.CSS_SELECTOR, "[data-field=slices]").text == rf["depth"]["text"], f"the volume's depth formula of {layer['path']}")
    check(row.find_element(By.CSS_SELECTOR, "[data-field=rows]").text == rf["height"]["text"], f"the volume's rows formula of {layer['path']}")
    if layer["receptive_field"]:
        check(row.find_element(By.CSS_SELECTOR, "[data-field=size]").text == f"{rf['depth']['size']}×{rf['height']['size']}×{rf['width']['size']}", f"the volume's size of {layer['path']}")
b = ref["index_base"]
show_unit(sid, "2", [2 + b, 1 + b, 0 + b])
pos = api("/v1/receptive-field", {"model": volume, "index_base": b, "position": {"layer": "2", "index": [2 + b, 1 + b, 0 + b]}})["position"]
facts = {e.get_attribute("data-fact"): e.text for e in d.find_elements(By.CSS_SELECTOR, "#rf-facts dd")}
check(facts.get("slices") and expand(pos["input_slices"]) == set(range(b, 6 + b)), f"the unit's slices {facts.get('slices')} {pos['input_slices']}")
check(drawn_cells() == api_cells(pos), "the volume unit's rows and columns are drawn exactly")
shot("receptive-field-volume")

# ---- complexity: inception_reduced ----
sid = status_id("cx")
pick_model("inception_reduced")
tab("cx")
check(run_and_wait("cx-run", sid).endswith("ok"), "complexity ran")
ref = api("/v1/complexity", {"model": {"preset": "inception_reduced"}, "batch_size": 1, "dtype": "float32", "verify": True,
                             "conventions": {"additions": "accumulate", "flops": "mults_plus_adds", "count_batchnorm": False,
                                             "count_activations": False, "count_pooling": False, "count_residual_adds": False}})


def num(text):
    """A number the page wrote into an attribute (read as text: WebDriver's own number transfer can
    round, geckodriver's does); an empty attribute is None."""
    return None if text == "" else float(text)


def table_values(sel="#cx-table tbody tr"):
    rows = d.execute_script("""return [...document.querySelectorAll(arguments[0])].map(tr => [tr.dataset.path,
        Object.fromEntries([...tr.querySelectorAll('td[data-key]')].map(td => [td.dataset.key, [td.dataset.value, td.textContent]]))])""", sel)
    return [[p, {k: [num(v), t] for k, (v, t) in cells.items()}] for p, cells in rows]


def parse_shown(text):
    return float(text.replace(",", ""))


shown = table_values()
check([p for p, _ in shown] == [r["path"] for r in ref["rows"]], "one table row per API row, in order")
for (path, cells), row in zip(shown, ref["rows"]):
    for key, (value, text) in cells.items():
        check(value == row[key], f"{path} {key}: page {value}, API {row[key]}")
        check(abs(parse_shown(text) - row[key]) <= 1e-3 * max(1, abs(row[key])), f"{path} {key} shown as {text}")
tot = table_values("#cx-table tfoot tr")[0][1]
for key, (value, _) in tot.items():
    check(value == ref["totals"][key], f"total {key}")
check(tot["params"][1] == "346,720", f"the course's P5 total {tot['params'][1]}")
# collapse and expand a branch
d.find_element(By.CSS_SELECTOR, "#cx-table tr[data-path='0.branches.1'] button.toggle").click()
paths = [p for p, _ in table_values()]
check("0.branches.1" in paths and not any(p.startswith("0.branches.1.") for p in paths), "collapsed branch hides its children")
d.find_element(By.CSS_SELECTOR, "#cx-table tr[data-path='0.branches.1'] button.toggle").click()
check(len(table_values()) == len(ref["rows"]), "expanded again")
# sort by FLOPs (descending first)
d.find_element(By.CSS_SELECTOR, "#cx-table button.sort[data-key='flops']").click()
flops = [c["flops"][0] for _, c in table_values()]
check(flops == sorted(flops, reverse=True), "sorted by FLOPs, descending")
bars = [num(v) for v in d.execute_script("return [...document.querySelectorAll('#cx-chart .bar-0')].map(b => b.dataset.value)")]
leaf = [r["flops"] for r in ref["rows"] if not r["subtotal"] and (r["params"] > 0 or r["flops"] > 0)]
check(bars == leaf, "bar chart: one FLOPs bar per layer with the API's values")
shot("complexity")
# the CSV and Markdown downloads equal the API's answers
for f in os.listdir(DOWNLOADS):
    os.remove(os.path.join(DOWNLOADS, f))
def downloaded(name):
    path = os.path.join(DOWNLOADS, name)
    return open(path).read() if os.path.exists(path) else None


for button, fmt, name in [("cx-csv", "csv", "complexity.csv"), ("cx-md", "markdown", "complexity.md")]:
    want = api(f"/v1/complexity?format={fmt}", {"model": {"preset": "inception_reduced"}, "batch_size": 1, "dtype": "float32", "verify": False,
                                                "conventions": {"additions": "accumulate", "flops": "mults_plus_adds", "count_batchnorm": False,
                                                                "count_activations": False, "count_pooling": False, "count_residual_adds": False}}, raw=True)
    by_id(button).click()
    # Firefox creates the file first and writes it after: wait for the whole download
    deadline = time.time() + 20
    while time.time() < deadline and downloaded(name) != want:
        time.sleep(0.1)
    check(downloaded(name) == want, f"downloaded {name} equals the API's {fmt}")
# a tool profile
Select(by_id("cx-profile")).select_by_value("fvcore")
check(run_and_wait("cx-run", sid).endswith("ok"), "fvcore profile ran")
ref = api("/v1/complexity", {"model": {"preset": "inception_reduced"}, "profile": "fvcore", "verify": False})
tot = table_values("#cx-table tfoot tr")[0][1]
check(tot["flops"][0] == ref["totals"]["flops"], "fvcore profile total FLOPs")
# its permalink reopens the complexity tab with the profile, and counts again
link = d.current_url
check("#cx/" in link, "the address names the complexity tab")
d.get("about:blank")
open_page(link)
wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#cx-table tfoot tr"))
check(by_id("tab-cx").get_attribute("aria-selected") == "true", "the permalink opens the complexity tab")
check(by_id("cx-profile").get_attribute("value") == "fvcore", "with the fvcore profile")
check(table_values("#cx-table tfoot tr")[0][1]["flops"][0] == ref["totals"]["flops"], "and the same total")
sid = status_id("cx")
Select(by_id("cx-profile")).select_by_value("none")

# ---- gradients: the sigmoid MLP ----
sid = status_id("gd")
pick_model("sigmoid_mlp")
tab("gd")
check(run_and_wait("gd-run", sid).endswith("ok"), "gradients ran")
spec = {"input_shape": [32], "layers": [{"type": "linear", "out_features": 32}, {"type": "sigmoid"}, {"type": "linear", "out_features": 32},
                                         {"type": "sigmoid"}, {"type": "linear", "out_features": 1}]}
ref = api("/v1/gradient-diagnostics", {"model": spec, "init": {"type": "normal", "scale": 1, "seed": 1, "std": 0.05}, "inputs": {"batch_size": 8},
                                       "dtype": "float64", "device": "cpu", "sweep": {"depths": [1, 2, 4, 8], "scales": [0.5, 1, 4]}})
check(by_id("gd-verdict").get_attribute("data-verdict") == ref["verdict"], "verdict")
for l in ref["layers"]:
    cells = dict(table_values(f"#gd-layers tr[data-path='{l['path']}']"))[l["path"]]
    check(cells["weight_grad"][0] == l["weight_grad"]["frobenius"], f"weight grad of {l['path']}")
    check(cells["bias_grad"][0] == l["bias_grad"]["frobenius"], f"bias grad of {l['path']}")
    check(cells["bound"][0] == l["bias_grad_bound"], f"bound of {l['path']}")
for a in ref["activations"]:
    cells = dict(table_values(f"#gd-activations tr[data-path='{a['path']}']"))[a["path"]]
    check(cells["mean_derivative"][0] == a["mean_derivative"], f"mean g' of {a['path']}")
    check(cells["fraction_saturated"][0] == a["fraction_saturated"], f"saturated fraction of {a['path']}")
pts = [num(v) for v in d.execute_script("return [...document.querySelectorAll('#gd-chart .series')[0].querySelectorAll('[data-y]')].map(e => e.dataset.y)")]
check(pts == [l["weight_grad"]["frobenius"] for l in ref["layers"]], "chart points are the weight gradient norms")
sweep_series = d.execute_script("return document.querySelectorAll('#gd-sweep .series').length")
check(sweep_series == 3, "one sweep line per scale")
shot("gradients")

# ---- momentum: the witness ----
sid = status_id("mo")
tab("mo")
check(run_and_wait("mo-run", sid).endswith("ok"), "momentum ran")
ref = api("/v1/momentum/equivalence", {"theta0": [0], "gradients": [[1], [1]], "alpha": [0.1, 0.01], "beta": 0.9, "sutskever": True, "pytorch_sgd": True})
check(by_id("mo-verdict").get_attribute("data-verdict") == ref["verdict"] == "not_equivalent", "momentum verdict")
for form, traj in ref["trajectories"].items():
    for k, theta in enumerate(traj["theta"]):
        v = num(d.execute_script(f"return document.querySelector(\"#mo-theta td[data-form='{form}'][data-step='{k}']\").dataset.value"))
        check(v == theta[0], f"theta of {form} at step {k}: page {v!r}, API {theta[0]!r}")
check(d.execute_script("return document.querySelector(\"#mo-theta td[data-form='form_ii'][data-step='2']\").textContent") == "-0.119", "Form II theta_2 = -0.119")
check(d.execute_script("return document.querySelector(\"#mo-theta td[data-form='form_i'][data-step='2']\").textContent") == "-0.2", "Form I theta_2 = -0.2")
check([e.text for e in d.find_elements(By.CSS_SELECTOR, "#mo-explanation li")] == ref["explanation"], "explanation")
check(len(d.find_elements(By.CSS_SELECTOR, "#mo-pairs tbody tr")) == len(ref["pairs"]), "pairs")
shot("momentum")

# ---- grade ----
sid = status_id("gr")
tab("gr")
check(run_and_wait("gr-run", sid).endswith("ok"), "grading ran")
answers = {"p4.pool2.rows": "4i-9 <= m <= 4i+6", "p5.reduced.params.branch2": "67,232", "p5.reduced.params": "346,720", "p5.naive.params": "1,089,000"}
ref = api("/v1/grade", {"problem_set": "course", "answers": answers, "reveal": "hints"})
# by hand: pool2's rows and the reduced total (346,720) are right; branch 2 is 64*256+64 + 192*64*9+192 = 127,232,
# not 67,232; the naive total is 1,089,952, not 1,089,000
check(float(by_id("gr-score").get_attribute("data-score")) == ref["score"] == 2, f"score {ref['score']}")
for q in ref["questions"]:
    if q["id"] not in answers:
        continue
    row = d.find_element(By.CSS_SELECTOR, f"#gr-table tr[data-id='{q['id']}']")
    check(row.find_element(By.CSS_SELECTOR, ".feedback").text == q["feedback"].replace("**", ""), f"feedback of {q['id']}")
    check(row.get_attribute("data-correct") == ("true" if q["correct"] else "false"), f"verdict of {q['id']}")
shot("grade")

# a generated variant: its text shown, its answer key (from the API) graded full marks
key = api("/v1/variants", {"seed": 42})
Select(by_id("gr-set")).select_by_value("variant")
seed_box = by_id("gr-seed")
seed_box.clear()
seed_box.send_keys("42")
by_id("gr-show").click()
wait.until(lambda _: by_id("gr-text").is_displayed() and "Variant 42" in by_id("gr-text").text)
sheet = "\n".join(f"{k}: {v}" for k, v in key["answer_key"].items())
d.execute_script("arguments[0].value = arguments[1]", by_id("gr-answers"), sheet)
check(run_and_wait("gr-run", sid).endswith("ok"), "the variant was graded")
max_points = sum(q["points"] for q in key["questions"])
check(float(by_id("gr-score").get_attribute("data-score")) == max_points == float(by_id("gr-score").get_attribute("data-max")), "the key earns full marks")
shot("grade-variant")

# ---- the spec editor shows a 422 at its field, and a syntax error at its line ----
tab("rf")
bad = json.dumps({"input_shape": [3, 32, 32], "layers": [{"type": "conv2d", "out_channels": 8, "kernel_size": 3},
                                                          {"type": "maxpool2d", "kernel_size": 0}]}, indent=2)
set_spec(bad)
check(run_and_wait("rf-run", status_id("rf")).endswith("error"), "an invalid spec is an error")
box = by_id("spec-error")
check(box.is_displayed(), "the editor's error box is shown")
line = next(k + 1 for k, t in enumerate(bad.split("\n")) if '"kernel_size": 0' in t)
check(box.get_attribute("data-pointer") == "/model/layers/1/kernel_size", f"pointer {box.get_attribute('data-pointer')}")
check(box.get_attribute("data-line") == str(line), f"error at line {box.get_attribute('data-line')}, the field is on line {line}")
check(d.execute_script(f"return document.querySelector('#gutter [data-line=\"{line}\"]').classList.contains('err')"), "gutter marks the line")
sel = d.execute_script("const a = document.querySelector('#spec'); return a.value.slice(a.selectionStart, a.selectionEnd)")
check(sel.startswith('"kernel_size"'), f"the field is selected in the editor: {sel!r}")
check(by_id("spec").get_attribute("aria-invalid") == "true", "the editor is marked invalid")
shot("spec-error")
set_spec('{\n  "input_shape": [3, 8, 8]\n  "layers": []\n}')
check(run_and_wait("rf-run", status_id("rf")).endswith("error"), "a syntax error is an error")
check(box.get_attribute("data-line") == "3", f"syntax error at line 3, shown at {box.get_attribute('data-line')}")

# ---- the preset's layers into the editor ----
pick_model("vgg_stem")
by_id("expand").click()
wait.until(lambda _: "layers" in by_id("spec").get_attribute("value"))
check(json.loads(by_id("spec").get_attribute("value")) == api("/v1/presets/vgg_stem")["spec"], "the editor holds the preset's full spec")

# ---- permalink: the address reproduces the view ----
pick_model("vgg_stem")
Select(by_id("rf-base")).select_by_value("1")
check(run_and_wait("rf-run", status_id("rf")).endswith("ok"), "rf ran again")
show_unit(status_id("rf"), "9", [1, 56])
before = drawn_cells()
link = d.current_url
check("#rf/" in link, f"the address carries the view: {link[:80]}")
d.get("about:blank")
t1 = time.time()
open_page(link)
wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#rf-input-grid .rf-cell"))
timings["permalink_to_drawing_ms"] = round((time.time() - t1) * 1000, 1)
check(drawn_cells() == before, "the permalink draws the same cells")
check(by_id("rf-base").get_attribute("value") == "1", "the permalink keeps one-based indices")

# ---- hostile addresses: a broken or foreign permalink opens the default view, no script error ----
for frag in ["#rf/%%%", "#rf/" + base64.urlsafe_b64encode(b"[1, 2]").decode(), "#zz/" + base64.urlsafe_b64encode(b'{"tab": "nope", "model": 7, "rf": "x", "cx": [1]}').decode(),
             "#gd/" + "A" * 20000, "#" + "x" * 5000]:
    d.get("about:blank")
    open_page(BASE + "/" + frag)
    check(d.execute_script("return document.querySelectorAll('[role=tab][aria-selected=true]').length") == 1, f"one tab selected after {frag[:30]}")
for e in console():
    check(e["level"] != "SEVERE" or " 422 " in e["message"] or "(Unprocessable" in e["message"], f"console error: {e}")

# ---- a server with CUDA: the device control offers it (Chromium: /v1/info's answer rewritten in the page) ----
if not FIREFOX:
    hook = d.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
      const real = window.fetch;
      window.fetch = async (url, opts) => {
        const r = await real(url, opts);
        if (String(url) !== '/v1/info') return r;
        const info = await r.json();
        return new Response(JSON.stringify({...info, cuda_available: true, cuda_device_count: 2}), {status: 200, headers: {'content-type': 'application/json'}});
      };"""})
    open_page(BASE + "/")
    options = d.execute_script("return [...document.querySelectorAll('#gd-device option')].map(o => o.value)")
    check(options == ["cpu", "auto", "cuda", "cuda:0", "cuda:1"], f"device choices with two GPUs: {options}")
    check("CUDA (2 devices)" in by_id("server").text, "the header says CUDA")
    d.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": hook["identifier"]})
    open_page(BASE + "/")
    options = d.execute_script("return [...document.querySelectorAll('#gd-device option')].map(o => o.value)")
    has_cuda = api("/v1/info")["cuda_available"]
    check((options == ["cpu", "auto"]) != has_cuda, f"device choices follow the server ({has_cuda}): {options}")
open_page(link)

# ---- keyboard: arrows move between tabs ----
by_id("tab-rf").send_keys(Keys.ARROW_RIGHT)
check(by_id("tab-cx").get_attribute("aria-selected") == "true", "ArrowRight selects the next tab")
check(d.switch_to.active_element == by_id("tab-cx"), "and focuses it")
for e in console():
    # the failed requests above are expected to log their 422s; nothing else may be severe
    check(e["level"] != "SEVERE" or " 422 " in e["message"] or "(Unprocessable" in e["message"], f"console error: {e}")
d.quit()

# ---- API keys on: the page asks for one, keeps it in sessionStorage, and works with it ----
if KEYED:
    kbase, key = KEYED
    d = browser()
    wait = WebDriverWait(d, 60)
    open_page(kbase + "/")
    check("enter an API key" in by_id("server").text, f"the page says a key is needed: {by_id('server').text}")
    sid = status_id("rf")
    check(run_and_wait("rf-run", sid).endswith("error"), "without a key the analysis is refused")
    check("401" in d.find_element(By.ID, sid).text, "and the 401 is shown")
    by_id("api-key").send_keys(key)
    by_id("api-key").send_keys(Keys.TAB)
    check(run_and_wait("rf-run", sid).endswith("ok"), "with the key it runs")
    check(d.execute_script("return sessionStorage.getItem('layerscope.api_key')") == key, "the key is kept in sessionStorage")
    d.quit()

with open(os.path.join(OUT, "timings.json"), "w") as f:
    json.dump(timings, f, indent=2)
with open(os.path.join(OUT, "accessibility.json"), "w") as f:
    json.dump(axe_report, f, indent=2)
print(f"browser test ({BROWSER}): {checks} checks passed; timings {json.dumps(timings)}; screenshots in {OUT}")
