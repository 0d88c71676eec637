"""The roles' HTML reports, written by real runs of the roles on localhost, opened in headless Chromium."""

from __future__ import annotations

import json

import pytest

from ansible_collections.backingchain.qcow2.tests.helpers.playbook import Playbook

from .conftest import SCREENSHOTS

# Three chains on one host: two of depth 5 that the role flattens to standalone images (moving different amounts
# of data), one of depth 2 that it leaves and that is then backed up.
PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Chains of qcow2 images
      ansible.builtin.include_tasks: chains.yml
      loop: [[vm-big, 4], [vm-small, 4], [vm-flat, 1]]
      loop_control: {loop_var: chain}

    - name: Guest data in layers the flattening drops, more in vm-big than in vm-small
      ansible.builtin.command: qemu-io -f qcow2 -c "write -P 0x5a 0 {{ item.1 }}" {{ dir }}/images/{{ item.0 }}-s2.qcow2
      loop: [[vm-big, 8M], [vm-small, 1M]]
      changed_when: true

    - name: Plan, then flatten
      ansible.builtin.include_role:
        name: backingchain.qcow2.chain_flatten
      vars:
        chain_flatten_dirs: ["{{ dir }}/images"]
        chain_flatten_patterns: ["vm-*-top.qcow2"]
        chain_flatten_max_depth: 2
        chain_flatten_target_depth: 1
        chain_flatten_report_dir: "{{ dir }}/report"

    - name: Back up an image
      ansible.builtin.include_role:
        name: backingchain.qcow2.snapshot_backup
      vars:
        snapshot_backup_dir: "{{ dir }}/backups"
        snapshot_backup_disks:
          - path: "{{ dir }}/images/vm-flat-top.qcow2"
"""

CHAINS = """
- name: Base of {{ chain[0] }}
  backingchain.qcow2.qcow2_image:
    path: "{{ dir }}/images/{{ chain[0] }}-base.qcow2"
    size: 64M
- name: Layers of {{ chain[0] }}
  backingchain.qcow2.qcow2_image:
    path: "{{ dir }}/images/{{ chain[0] }}-s{{ item }}.qcow2"
    backing_file: "{{ chain[0] }}-{{ 'base' if item == 1 else 's%d' % (item - 1) }}.qcow2"
  loop: "{{ range(1, chain[1]) | list }}"
- name: Top of {{ chain[0] }}
  backingchain.qcow2.qcow2_image:
    path: "{{ dir }}/images/{{ chain[0] }}-top.qcow2"
    backing_file: "{{ chain[0] }}-{{ 's%d' % (chain[1] - 1) if chain[1] > 1 else 'base' }}.qcow2"
"""


@pytest.fixture(scope='module')
def reports(tmp_path_factory):
    work = tmp_path_factory.mktemp('reports')
    (work / 'chains.yml').write_text(CHAINS)
    (work / 'images').mkdir()
    run = Playbook(work, PLAYBOOK, {'dir': str(work)}).run()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    return work


def test_flatten_report_page(browser, reports):
    data = json.loads((reports / 'report' / 'chain-flatten.json').read_text())
    flattened = [row for row in data['images'] if row['result'] == 'flattened']
    assert len(flattened) == 2
    view = browser.open(reports / 'report' / 'chain-flatten.html', SCREENSHOTS / 'reports' / 'chain-flatten.png')
    assert view.console_errors == [] and [url for url in view.resources if not url.startswith('file://')] == []
    assert view.title == 'Chain flatten report'
    assert len(view.chain_pictures) == 2 * len(flattened)  # before and after
    befores = [picture for picture in view.chain_pictures if picture['label'].startswith('Before (depth 5)')]
    assert len(befores) == 2 and all(picture['boxes'] == 5 for picture in befores)
    assert all(picture['width'] > 100 and picture['height'] > 40 for picture in view.chain_pictures)


def test_flatten_report_sorts_by_bytes_moved(browser, reports):
    browser.open(reports / 'report' / 'chain-flatten.html', SCREENSHOTS / 'reports' / 'chain-flatten-again.png')
    order = browser.sort_table('images', 'bytes moved')
    assert order == sorted(order) and browser.sort_table('images', 'bytes moved') == sorted(order, reverse=True)


def test_backup_summary_page(browser, reports):
    page = reports / 'backups' / 'summary.html'
    view = browser.open(page, SCREENSHOTS / 'reports' / 'backup-summary.png')
    assert view.console_errors == [] and [url for url in view.resources if not url.startswith('file://')] == []
    assert view.title == 'Backup summary of localhost'
    assert [picture['label'] for picture in view.chain_pictures] == [
        'Source chain: vm-flat-top.qcow2, vm-flat-base.qcow2']
    assert view.chain_pictures[0]['boxes'] == 3  # the two images and the backup beside them
    text = page.read_text()
    for column in ('disk', 'source', 'action', 'bytes', 'duration', 'verify', 'backup'):
        assert '>%s</th>' % column in text
    assert '>created</td>' in text and '>ok</td>' in text
