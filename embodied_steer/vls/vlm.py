"""A client for OpenAI-compatible chat-completions endpoints with image input, and its disk cache.

Works with hosted APIs and with local servers that speak the same protocol (vLLM, Ollama's
``/v1``, llama.cpp's server). Only the standard library is used (``urllib.request``).

Configuration (:meth:`VLMConfig.from_env`)::

    EMBODIED_STEER_VLM_BASE_URL   e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1
    EMBODIED_STEER_VLM_MODEL      the model name the server knows
    EMBODIED_STEER_VLM_API_KEY    the key (or set EMBODIED_STEER_VLM_API_KEY_ENV to the name of
                                  another variable that holds it, e.g. OPENAI_API_KEY)
    EMBODIED_STEER_VLM_TIMEOUT    seconds per request (default 120)
    EMBODIED_STEER_VLM_CACHE_DIR  response cache (default $XDG_CACHE_HOME/embodied_steer/vlm)

Without ``EMBODIED_STEER_VLM_BASE_URL`` no VLM is configured and the shipped reward programs are used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from embodied_steer.core.errors import ConfigError
from embodied_steer.vls.errors import VLMError

ENV_PREFIX = "EMBODIED_STEER_VLM_"


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "embodied_steer" / "vlm"


@dataclass(frozen=True)
class VLMConfig:
    """Where and how to reach a chat-completions endpoint.

    Attributes:
        base_url: API root (``http://127.0.0.1:8000/v1``) or the full ``.../chat/completions`` URL.
        model: model name sent in each request.
        api_key_env: name of the environment variable holding the API key (read at request time,
            never stored or cached); empty or unset variable → no ``Authorization`` header.
        timeout_s: seconds per request (connect and read).
        max_tokens, temperature: generation settings sent with each request.
        cache_dir: response cache folder; ``None`` disables caching.
        retries: how many times to repeat a request answered with HTTP 429 / 500 / 502 / 503 / 504
            (rate limits and overloaded servers), waiting ``retry_backoff_s · 2^i`` seconds between.
    """

    base_url: str
    model: str
    api_key_env: str = ENV_PREFIX + "API_KEY"
    timeout_s: float = 120.0
    max_tokens: int = 2048
    temperature: float = 0.0
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    retries: int = 2
    retry_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.base_url or not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"VLM base URL must start with http:// or https://, got '{self.base_url}'")
        if not self.model:
            raise ConfigError("VLM model name is empty")
        if self.timeout_s <= 0:
            raise ConfigError(f"VLM timeout must be positive, got {self.timeout_s}")
        if self.retries < 0 or self.retry_backoff_s < 0:
            raise ConfigError("VLM retries and retry_backoff_s must be >= 0")

    @property
    def endpoint(self) -> str:
        url = self.base_url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "VLMConfig | None":
        """The configuration from ``EMBODIED_STEER_VLM_*`` variables, or ``None`` when no base URL is set."""
        env = os.environ if environ is None else environ
        base_url = env.get(ENV_PREFIX + "BASE_URL", "").strip()
        if not base_url:
            return None
        model = env.get(ENV_PREFIX + "MODEL", "").strip()
        if not model:
            raise ConfigError(f"{ENV_PREFIX}BASE_URL is set but {ENV_PREFIX}MODEL is not")
        kwargs: dict[str, Any] = {
            "api_key_env": env.get(ENV_PREFIX + "API_KEY_ENV", "").strip() or ENV_PREFIX + "API_KEY"}
        if env.get(ENV_PREFIX + "TIMEOUT"):
            try:
                kwargs["timeout_s"] = float(env[ENV_PREFIX + "TIMEOUT"])
            except ValueError:
                raise ConfigError(f"{ENV_PREFIX}TIMEOUT must be a number of seconds, got '{env[ENV_PREFIX + 'TIMEOUT']}'") from None
        if env.get(ENV_PREFIX + "CACHE_DIR"):
            kwargs["cache_dir"] = Path(env[ENV_PREFIX + "CACHE_DIR"])
        return cls(base_url=base_url, model=model, **kwargs)


class ResponseCache:
    """Responses on disk, one JSON file per key = sha256 of (model, messages' text, image hashes,
    generation settings). The API key is never part of a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(model: str, messages: list[dict[str, Any]], settings: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps({"model": model, "messages": _hash_images(messages),
                                          "settings": dict(settings)}, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> str | None:
        path = self.folder / f"{key}.json"
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        content = record.get("content")
        return content if isinstance(content, str) else None

    def put(self, key: str, content: str, meta: Mapping[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        record = {"content": content, **meta}
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1)
        os.replace(tmp, self.folder / f"{key}.json")


def _hash_images(messages: list[dict[str, Any]]) -> list[Any]:
    """Messages with image data URLs replaced by the sha256 of their bytes (keys stay small)."""
    out: list[Any] = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):
            parts = []
            for p in content:
                if p.get("type") == "image_url":
                    url = p["image_url"]["url"]
                    parts.append({"type": "image", "sha256": hashlib.sha256(url.encode()).hexdigest()})
                else:
                    parts.append(p)
            out.append({"role": m.get("role"), "content": parts})
        else:
            out.append(m)
    return out


def image_part(png: bytes) -> dict[str, Any]:
    """A chat-completions content part carrying a PNG image as a base64 data URL."""
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}}


def encode_png(image: Any) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` uint8 array."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


class VLMClient:
    """Sends chat-completions requests and returns the assistant's text, with a disk cache.

    Attributes:
        requests_sent: how many HTTP requests this client made (cache hits make none).
    """

    def __init__(self, config: VLMConfig) -> None:
        self.config = config
        self.cache = ResponseCache(config.cache_dir) if config.cache_dir is not None else None
        self.requests_sent = 0

    def chat(self, messages: list[dict[str, Any]], *, use_cache: bool = True) -> str:
        """Send ``messages`` (chat-completions format) and return the first choice's text.

        Raises:
            VLMError: on connection failure, timeout, an HTTP error status, a body that is not JSON or
                lacks ``choices[0].message.content``.
        """
        cfg = self.config
        settings = {"max_tokens": cfg.max_tokens, "temperature": cfg.temperature}
        key = ResponseCache.key(cfg.model, messages, settings)
        if use_cache and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        content = self._post({"model": cfg.model, "messages": messages, **settings})
        if self.cache is not None:
            self.cache.put(key, content, {"model": cfg.model, "endpoint": cfg.endpoint})
        return content

    def ask(self, prompt: str, *, system: str | None = None, png: bytes | None = None, use_cache: bool = True) -> str:
        """One user turn with text and an optional PNG image."""
        messages: list[dict[str, Any]] = []
        if system:
            messages.append({"role": "system", "content": system})
        parts: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        if png is not None:
            parts.append(image_part(png))
        messages.append({"role": "user", "content": parts})
        return self.chat(messages, use_cache=use_cache)

    def _post(self, payload: dict[str, Any]) -> str:
        for attempt in range(self.config.retries + 1):
            try:
                return self._post_once(payload)
            except _Retryable as exc:
                if attempt == self.config.retries:
                    raise VLMError(f"{exc} (after {attempt + 1} attempt(s))") from None
                time.sleep(self.config.retry_backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def _post_once(self, payload: dict[str, Any]) -> str:
        cfg = self.config
        url = cfg.endpoint
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), headers=headers, method="POST")
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=cfg.timeout_s) as response:  # noqa: S310 - http(s) only
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = _read_error_body(exc)
            message = f"VLM endpoint {url} answered HTTP {exc.code} {exc.reason}" + (f": {detail}" if detail else "")
            raise (_Retryable if exc.code in _RETRY_STATUS else VLMError)(message) from None
        except (TimeoutError, socket.timeout):
            raise VLMError(f"VLM endpoint {url} did not answer within {cfg.timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                raise VLMError(f"VLM endpoint {url} did not answer within {cfg.timeout_s:g} s") from None
            raise VLMError(f"cannot reach VLM endpoint {url}: {exc.reason}") from None
        except (ConnectionError, OSError) as exc:
            raise VLMError(f"connection to VLM endpoint {url} failed: {exc}") from None
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise VLMError(f"VLM endpoint {url} answered with malformed JSON: {body[:200]!r}") from None
        return _content(data, url)


_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class _Retryable(VLMError):
    """An HTTP status worth asking again for (rate limit, overloaded or failing server)."""


def _read_error_body(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read()[:500].decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the body is only decoration for the message
        return ""
    try:
        err = json.loads(raw).get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
    except (json.JSONDecodeError, AttributeError):
        pass
    return raw.strip()


def _content(data: Any, url: str) -> str:
    """``choices[0].message.content`` as text (joining text parts when it is a list)."""
    try:
        message = data["choices"][0]["message"]
        content = message["content"]
    except (KeyError, IndexError, TypeError):
        raise VLMError(f"VLM endpoint {url} answered without choices[0].message.content: {str(data)[:200]}") from None
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise VLMError(f"VLM endpoint {url} answered with non-text content of type {type(content).__name__}")
    return content
