"""Headless Chromium (Debian's chromium and chromium-driver) driven through selenium, for pages opened from disk.

Every page is opened with the network cut off (a proxy nobody listens on, no DNS): a page that needs anything
from outside shows it as a console error. open() returns what a person would notice: console errors, the
resources the page loaded, the chain pictures in its DOM, and a screenshot of the whole page.
"""

from __future__ import annotations

import shutil
import tempfile
import typing as t
from dataclasses import dataclass
from pathlib import Path

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run', '--disable-dev-shm-usage', '--proxy-server=127.0.0.1:9',
         '--host-resolver-rules=MAP * ~NOTFOUND')
WIDTH = 1280


@dataclass
class PageView:
    url: str
    title: str
    console_errors: list[str]
    resources: list[str]  # URLs of everything the page loaded (scripts, styles, images, fonts)
    chain_pictures: list[dict[str, t.Any]]  # per svg.chain-diagram: width, height, boxes, label
    screenshot: Path


class Browser:
    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix='chromium-profile-')  # a fresh --user-data-dir
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS + ('--user-data-dir=%s' % self.profile, '--window-size=%d,1000' % WIDTH):
            options.add_argument(flag)
        options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)

    def open(self, page: Path, screenshot: Path) -> PageView:
        driver = self.driver
        driver.get_log('browser')  # drop what an earlier page left
        driver.get(page.resolve().as_uri())
        driver.execute_script('return document.readyState')
        errors = [entry['message'] for entry in driver.get_log('browser') if entry['level'] == 'SEVERE']
        resources = driver.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) { return e.name; });")
        pictures = driver.execute_script("""
            return Array.from(document.querySelectorAll('svg.chain-diagram')).map(function (svg) {
                var box = svg.getBoundingClientRect();
                return {width: box.width, height: box.height, boxes: svg.querySelectorAll('rect').length,
                        label: svg.getAttribute('aria-label')};
            });""")
        height = driver.execute_script('return document.documentElement.scrollHeight')
        driver.set_window_size(WIDTH, min(max(int(height), 600), 8000))
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
        driver.set_window_size(WIDTH, 1000)
        return PageView(driver.current_url, driver.title, errors, resources, pictures, screenshot)

    def sort_table(self, table_id: str, column: str) -> list[float]:
        """Click a column's header in the open page; the column's data-sort values, top row first."""
        from selenium.webdriver.common.by import By

        table = self.driver.find_element(By.ID, table_id)
        headers = table.find_elements(By.TAG_NAME, 'th')
        index = [header.text for header in headers].index(column)
        headers[index].click()
        return [float(row.find_elements(By.TAG_NAME, 'td')[index].get_attribute('data-sort'))
                for row in table.find_elements(By.CSS_SELECTOR, 'tbody tr')]

    def close(self):
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)
