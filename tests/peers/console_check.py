"""End-to-end check of the operator console in real headless Chromium (Debian's chromium and
chromedriver, driven by Selenium; no browser download).

  console_check.py --base URL --user U --password P --edge-pid PID --pending FP --screenshot PNG

Logs in, sees a simulated point's value change, kills the edge (PID) and sees the point turn
stale, approves the pending key FP with the button and sees that node connect. Saves a
screenshot.
"""

import argparse
import os
import signal
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--edge-pid", type=int, required=True)
    ap.add_argument("--point", required=True)
    ap.add_argument("--pending", required=True)
    ap.add_argument("--pending-name", required=True)
    ap.add_argument("--screenshot", required=True)
    a = ap.parse_args()

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for f in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--ignore-certificate-errors", "--window-size=1400,900",
              f"--user-data-dir={tempfile.mkdtemp()}"]:
        opts.add_argument(f)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    wait = WebDriverWait(d, 20)
    try:
        d.get(a.base + "/")
        wait.until(lambda d: d.find_elements(By.ID, "login"))
        d.find_element(By.ID, "name").send_keys(a.user)
        d.find_element(By.ID, "password").send_keys(a.password)
        d.find_element(By.ID, "login").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#conn.ok"))
        print("console: logged in, live")

        sel = f'tr[data-point="{a.point}"]'
        def cell(cls):
            # The table re-renders live: read the cell fresh each time.
            return d.execute_script("const c = document.querySelector(arguments[0]); return c ? c.textContent : null;", f"{sel} td.{cls}")
        def click(css):
            wait.until(lambda d: d.execute_script("const e = document.querySelector(arguments[0]); if (e) { e.click(); return true; } return false;", css))
        wait.until(lambda d: cell("quality") == "Good")
        first = cell("value")
        wait.until(lambda d: cell("value") not in (None, first))
        print(f"console: {a.point} changed {first} -> {cell('value')}, Good")
        click(sel)  # shows the trend

        os.kill(a.edge_pid, signal.SIGKILL)
        t0 = time.time()
        wait.until(lambda d: cell("quality") == "UncertainNoCommunicationLastUsableValue")
        print(f"console: after kill -9 of the edge, {a.point} shows stale in {time.time() - t0:.2f} s")

        click('nav button[data-tab="keys"]')
        btn = f'button.approve[data-fp="{a.pending}"]'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, btn))
        d.execute_script("const n = arguments[0]; window.prompt = (m) => m.startsWith('Role') ? 'edge' : n;", a.pending_name)
        click(btn)
        print("console: approved the pending key with the button")
        click('nav button[data-tab="nodes"]')
        node = f'tr[data-node="{a.pending_name}"] td.state .ok'
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, node))
        print(f"console: node {a.pending_name} connected")
        click('nav button[data-tab="points"]')
        time.sleep(0.5)
        d.save_screenshot(a.screenshot)
        print(f"console: screenshot {a.screenshot}")
    finally:
        d.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
