"""A client for the layerscope service.

    from layerscope import Client
    ls = Client("http://localhost:8080")
    table = ls.complexity(model, example_input)       # an nn.Module and an example input
    table = ls.complexity("resnet18", profile="fvcore")  # a preset
    rf = ls.receptive_field({"input_shape": [3, 32, 32], "layers": [...]},
                            position={"layer": "pool2", "index": [1, 1]})
    print(table.to_markdown())

A model is an ``nn.Module`` with an example input (exported to ONNX with torch.onnx.export and
uploaded; BatchNorm kept as a layer), a preset's name, a spec dict, or ``bytes`` of an ONNX
file. Refused requests raise :class:`LayerscopeError` carrying the problem's pointer and reason.
Only the standard library is needed; torch for modules, pandas for ``to_dataframe``.
"""
from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional, Union

__all__ = ["Client", "LayerscopeError", "Result"]


class LayerscopeError(Exception):
    """A problem+json answer: ``status``, ``pointer`` (the JSON pointer of the field), ``detail``."""

    def __init__(self, status: int, title: str, detail: str, pointer: str = "", body: Optional[dict] = None):
        super().__init__(f"{status} {title}: {detail}" + (f" (at {pointer})" if pointer else ""))
        self.status, self.title, self.detail, self.pointer, self.body = status, title, detail, pointer, body or {}


class Result(dict):
    """The service's JSON answer (a dict), with its per-layer table as ``rows``."""

    table_key = "rows"

    @property
    def rows(self) -> List[Dict[str, Any]]:
        return list(self.get("rows") or self.get("layers") or [])

    def to_dataframe(self):
        import pandas as pd  # optional dependency

        return pd.DataFrame(self.rows)

    def to_markdown(self, columns: Optional[List[str]] = None) -> str:
        rows = self.rows
        if not rows:
            return ""
        columns = columns or [k for k in rows[0] if not isinstance(rows[0][k], (dict, list)) or k == "output_shape"]

        def show(v):
            if isinstance(v, list):
                return "x".join(str(x) for x in v)
            return "" if v is None else str(v)

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(show(r.get(c)).replace("|", "\\|") for c in columns) + " |" for r in rows]
        return "\n".join(lines)


ModelLike = Union[str, dict, bytes, Any]


def export_onnx(module, example_input) -> bytes:
    """An nn.Module as ONNX bytes, BatchNorm kept as a node (TrainingMode.PRESERVE: the default
    EVAL mode folds it into the conv before it, and the counts would be the folded network's)."""
    import torch

    buf = io.BytesIO()
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    torch.onnx.export(module, args, buf, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE)
    return buf.getvalue()


class Client:
    def __init__(self, url: str = "http://localhost:8080", api_key: Optional[str] = None, timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # -- transport -------------------------------------------------------------------------
    def _send(self, path: str, body: dict, model: ModelLike = None, example_input=None) -> Result:
        headers = {}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        file = None
        if isinstance(model, (bytes, bytearray)):
            file = bytes(model)
        elif model is not None and not isinstance(model, (str, dict)):
            if example_input is None:
                raise ValueError("an nn.Module needs an example input (one sample with the batch axis, e.g. torch.zeros(1, 3, 224, 224))")
            file = export_onnx(model, example_input)
        elif isinstance(model, str):
            body = dict(body, model={"preset": model})
        elif isinstance(model, dict):
            body = dict(body, model=model)
        if file is not None:
            query = "?request=" + urllib.parse.quote(json.dumps(body)) if body else ""
            req = urllib.request.Request(self.url + path + query, data=file, headers=dict(headers, **{"content-type": "application/octet-stream"}))
        else:
            req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), headers=dict(headers, **{"content-type": "application/json"}))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return Result(json.loads(r.read()))
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                p = json.loads(raw)
            except ValueError:
                p = {"title": e.reason, "detail": raw.decode(errors="replace")}
            raise LayerscopeError(e.code, p.get("title", ""), p.get("detail", ""), p.get("pointer", ""), p) from None

    # -- endpoints -------------------------------------------------------------------------
    def complexity(self, model: ModelLike, example_input=None, **options) -> Result:
        """POST /v1/complexity: options as the endpoint names them (profile, batch_size, conventions, verify...)."""
        return self._send("/v1/complexity", options, model, example_input)

    def receptive_field(self, model: ModelLike, example_input=None, **options) -> Result:
        """POST /v1/receptive-field: position={"layer", "index", "channel"}, index_base, verify."""
        r = self._send("/v1/receptive-field", options, model, example_input)
        r.table_key = "layers"
        return r

    def gradient_diagnostics(self, model: ModelLike, example_input=None, **options) -> Result:
        """POST /v1/gradient-diagnostics: a module's own weights are used (init "model")."""
        return self._send("/v1/gradient-diagnostics", options, model, example_input)

    def momentum(self, **options) -> Result:
        """POST /v1/momentum/equivalence."""
        return self._send("/v1/momentum/equivalence", options)

    def grade(self, **options) -> Result:
        """POST /v1/grade: questions and answers, as the endpoint takes them."""
        return self._send("/v1/grade", options)

    def presets(self) -> List[str]:
        with urllib.request.urlopen(self.url + "/v1/presets", timeout=self.timeout) as r:
            v = json.loads(r.read())
        return [p["name"] if isinstance(p, dict) else p for p in (v.get("presets", v) if isinstance(v, dict) else v)]
