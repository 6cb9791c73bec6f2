#!/usr/bin/env python3
"""Open one page in headless Chromium and report what a person would see.

Drives Chromium over the DevTools protocol on a pipe (fds 3 and 4, NUL-delimited JSON), so it
needs nothing beyond the Python standard library. Prints one JSON object: the page's title, its
rendered DOM, every console message, exception and browser log entry at error level (CSP
violations and failed loads arrive that way), and writes a full-page PNG screenshot.

usage: page.py CHROMIUM URL SCREENSHOT.png [WIDTH]
"""
import base64
import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

TIMEOUT = 30.0


class Browser:
    def __init__(self, chromium, width):
        cmd_r, cmd_w = os.pipe()
        resp_r, resp_w = os.pipe()
        # Out of the way of 3 and 4, which the child's copies take.
        child_cmd = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        child_resp = fcntl.fcntl(resp_w, fcntl.F_DUPFD, 10)
        os.close(cmd_r)
        os.close(resp_w)

        def fds():
            os.dup2(child_cmd, 3)
            os.dup2(child_resp, 4)

        self.profile = tempfile.TemporaryDirectory(prefix="vacme-chromium-")
        self.proc = subprocess.Popen(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--disable-extensions", "--ignore-certificate-errors",
                "--remote-debugging-pipe", f"--user-data-dir={self.profile.name}",
                f"--window-size={width},900", "about:blank",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, pass_fds=(3, 4),
        )
        os.close(child_cmd)
        os.close(child_resp)
        self.out = os.fdopen(cmd_w, "wb", buffering=0)
        self.inp = os.fdopen(resp_r, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def _read(self):
        while b"\0" not in self.buf:
            chunk = self.inp.read(65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.out.write(json.dumps(msg).encode() + b"\0")
        while True:
            m = self._read()
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method, deadline):
        for i, m in enumerate(self.events):
            if m.get("method") == method:
                del self.events[i]
                return m
        while time.monotonic() < deadline:
            m = self._read()
            if m.get("method") == method:
                return m
            self.events.append(m)
        raise RuntimeError(f"no {method} before the deadline")

    def close(self, clean):
        if clean:
            try:
                self.call("Browser.close")
            except Exception:
                pass
        else:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.profile.cleanup()


def problems(events):
    found = []
    for m in events:
        method, p = m.get("method"), m.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            found.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            found.append("exception: " + p.get("exceptionDetails", {}).get("text", ""))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            found.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
    return found


def expired(_signum, _frame):
    raise TimeoutError(f"the page did not finish within {2 * TIMEOUT:.0f} s")


def main():
    # A read from a hung browser blocks: the alarm ends it, and the browser is killed.
    signal.signal(signal.SIGALRM, expired)
    signal.alarm(int(2 * TIMEOUT))
    chromium, url, shot = sys.argv[1], sys.argv[2], sys.argv[3]
    width = int(sys.argv[4]) if len(sys.argv) > 4 else 1280
    b = Browser(chromium, width)
    clean = False
    try:
        deadline = time.monotonic() + TIMEOUT
        targets = b.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        session = b.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            b.call(f"{domain}.enable", session=session)
        nav = b.call("Page.navigate", {"url": url}, session=session)
        if nav.get("errorText"):
            raise RuntimeError(f"navigation failed: {nav['errorText']}")
        b.wait_event("Page.loadEventFired", deadline)
        time.sleep(0.3)  # late console messages and CSP reports
        b.call("Runtime.evaluate", {"expression": "1"}, session=session)  # drains what arrived

        def value(expr):
            return b.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=session)["result"].get("value")

        title = value("document.title")
        dom = value("document.documentElement.outerHTML")
        height = value("Math.ceil(document.documentElement.scrollHeight)") or 900
        b.call("Emulation.setDeviceMetricsOverride",
               {"width": width, "height": min(int(height), 8000), "deviceScaleFactor": 1, "mobile": width < 600},
               session=session)
        png = b.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
        print(json.dumps({"title": title, "dom": dom, "problems": problems(b.events), "status": "ok"}))
        clean = True
    finally:
        signal.alarm(0)
        b.close(clean)


if __name__ == "__main__":
    main()
