"""Shared helpers for the backingchain.qcow2 test suites.

Import them through the collection namespace, which tests/conftest.py makes
importable under plain pytest and ansible-test provides under ansible-test:

    from ansible_collections.backingchain.qcow2.tests.helpers.qemu import qemu_img
"""
