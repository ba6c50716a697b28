"""Screenshots of every page of the operator console (issue 20), at desktop and
phone width, as small PNGs::

    python -m ops.console_screenshots --url http://127.0.0.1:8080 \\
        --token "$SYNCD_OPERATOR_TOKEN" --out docs/screenshots

It drives Debian's headless ``chromium`` through ``chromedriver`` (Selenium, a test
dependency) against a running daemon (``python3 dev.py run`` for the demo): it logs
in with the token, visits each page and writes ``<page>-desktop.png`` and
``<page>-phone.png``, downscaled so each stays a few tens of kilobytes.
"""

from __future__ import annotations

import argparse
import io
import struct
import zlib
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

DESKTOP = (1280, 900)
PHONE = (390, 844)


def pages(department: str | None, record: str | None) -> list[tuple[str, str]]:
    """(file name, path) of every page."""
    found = [("status", "/"), ("history", "/history"), ("failures", "/failures")]
    found.append(("board", f"/board?department={department}" if department else "/board"))
    found.append(("tickets", f"/tickets?module=contacts&record={record}" if record
                  else "/tickets"))
    found.append(("integration", "/integration"))
    found.append(("replay", "/replay"))
    return found


def start(width: int, height: int, *, chromium: str = "/usr/bin/chromium",
          chromedriver: str = "/usr/bin/chromedriver") -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(chromedriver), options=options)


def login(driver: Any, base: str, token: str) -> None:
    driver.get(base + "/login")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()


def capture(driver: Any, base: str, out: Path, *, suffix: str,
            department: str | None = None, record: str | None = None,
            scale: int = 2) -> list[Path]:
    """Visit every page (logged in) and write its PNG; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, path in pages(department, record):
        driver.get(base + path)
        png = driver.get_screenshot_as_png()
        target = out / f"{name}-{suffix}.png"
        target.write_bytes(shrink(png, scale))
        written.append(target)
    return written


def shrink(png: bytes, scale: int) -> bytes:
    """The PNG downscaled by ``scale`` (every scale-th pixel of every scale-th row)
    and reduced to 64 grey-blue levels per channel, so it compresses small; PNG is
    decoded and encoded here (8-bit RGB/RGBA, no interlace) to need no image library."""
    width, height, channels, rows = _decode(png)
    small_rows = []
    for y in range(0, height, scale):
        row = rows[y]
        pixels = bytearray()
        for x in range(0, width, scale):
            at = x * channels
            pixels += bytes(v & 0xFC for v in row[at:at + 3])
        small_rows.append(bytes(pixels))
    return _encode((width + scale - 1) // scale, len(small_rows), small_rows)


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    at, found = 8, []
    while at < len(png):
        (length,) = struct.unpack(">I", png[at:at + 4])
        kind = png[at + 4:at + 8]
        found.append((kind, png[at + 8:at + 8 + length]))
        at += 12 + length
    return found


def _decode(png: bytes) -> tuple[int, int, int, list[bytes]]:
    chunks = _chunks(png)
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 8 or colour not in (2, 6) or interlace:
        raise ValueError("only 8-bit RGB or RGBA, non-interlaced PNG")
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(data for kind, data in chunks if kind == b"IDAT"))
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    at = 0
    for _ in range(height):
        kind, line = raw[at], bytearray(raw[at + 1:at + 1 + stride])
        at += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows


def _encode(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = io.BytesIO()
    for row in rows:
        raw.write(b"\x01")  # the "sub" filter: flat areas compress to almost nothing
        previous = bytearray(3)
        out = bytearray()
        for x in range(0, len(row), 3):
            pixel = row[x:x + 3]
            out += bytes((pixel[i] - previous[i]) & 0xFF for i in range(3))
            previous = bytearray(pixel)
        raw.write(bytes(out))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw.getvalue(), 9)) + chunk(b"IEND", b""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the daemon's HTTP address")
    parser.add_argument("--token", required=True,
                        help="an API token (admin: every page shows its actions)")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--department", help="the board's department (default: the first)")
    parser.add_argument("--record", help="a CRM contact id for the tickets page")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")
    for suffix, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        driver = start(width, height)
        try:
            login(driver, base, args.token)
            for path in capture(driver, base, args.out, suffix=suffix,
                                department=args.department, record=args.record,
                                scale=2 if suffix == "desktop" else 1):
                print(f"{path} ({path.stat().st_size // 1024} KiB)")
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
