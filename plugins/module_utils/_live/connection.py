# Copyright (c) backingchain.qcow2 contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is PRIVATE to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Connecting to libvirt, finding a domain, and its coarse state."""

from __future__ import annotations

from ansible_collections.backingchain.qcow2.plugins.module_utils._live.errors import LiveError
from ansible_collections.backingchain.qcow2.plugins.module_utils._live.libvirt_dep import (
    Connection,
    DomainHandle,
    libvirt_error_code,
    libvirt_error_text,
    require_libvirt,
)

STATE_RUNNING = "running"
STATE_SHUT_OFF = "shut off"
STATE_OTHER = "other"

_STATE_NAMES = {
    0: "no state",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutting down",
    5: "shut off",
    6: "crashed",
    7: "suspended (pmsuspended)",
}


def _ignore_libvirt_error(_context: object, _error: object) -> None:
    """libvirt prints every error to stderr unless a handler is set; we report errors ourselves."""


def connect(uri: str) -> Connection:
    """Open a read-write libvirt connection to ``uri``; raise LiveError if libvirtd does not answer."""
    libvirt = require_libvirt()
    libvirt.registerErrorHandler(_ignore_libvirt_error, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LiveError("cannot connect to libvirt at %s: %s" % (uri, libvirt_error_text(exc)), uri=uri)
    if conn is None:  # older bindings returned None instead of raising
        raise LiveError("cannot connect to libvirt at %s" % uri, uri=uri)
    return conn


def lookup_domain(conn: Connection, name: str) -> DomainHandle:
    """The virDomain called ``name``; LiveError if no such domain is defined or running."""
    libvirt = require_libvirt()
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if libvirt_error_code(exc) == libvirt.VIR_ERR_NO_DOMAIN:
            raise LiveError("domain '%s' does not exist on %s" % (name, conn.getURI()), domain=name)
        raise LiveError("cannot look up domain '%s': %s" % (name, libvirt_error_text(exc)), domain=name)


def domain_state_name(dom: DomainHandle) -> str:
    """libvirt's precise state word for messages: running, paused, shut off, crashed, ..."""
    state, _reason = dom.state()
    return _STATE_NAMES.get(state, "unknown state %d" % state)


def domain_state(dom: DomainHandle) -> str:
    """Coarse state deciding which path applies: STATE_RUNNING (qemu has the images open and
    is executing), STATE_SHUT_OFF (no qemu: offline engine + inactive XML update) or
    STATE_OTHER (paused, crashed, ...: qemu may still hold the images; refuse or ask the user)."""
    name = domain_state_name(dom)
    if name == STATE_RUNNING:
        return STATE_RUNNING
    if name == STATE_SHUT_OFF:
        return STATE_SHUT_OFF
    return STATE_OTHER


def require_active(dom: DomainHandle, action: str) -> None:
    """Raise LiveError unless a qemu process runs the domain (running or paused): block jobs need it."""
    if not dom.isActive():
        raise LiveError("cannot %s: domain '%s' is %s, so no qemu holds its images; change them offline instead"
                        % (action, dom.name(), domain_state_name(dom)), domain=dom.name())
