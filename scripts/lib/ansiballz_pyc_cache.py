"""A bytecode cache for what Ansible modules import from their AnsiballZ payload zip. Test venvs only.

Why it exists: every module task runs its payload from a fresh zip on sys.path, and zipimport can neither use
nor write .pyc files there, so each task compiles ansible.module_utils.basic, its dependencies and the
collection's module_utils from source (twice over: zipimport's get_filename compiles too). That was about
0.3 s of CPU a task, several hundred seconds a test run. scripts/setup.sh copies this file into the test venvs with a
.pth file that calls install(); it is not part of the collection, and nothing needs it to work.

Only zips named like AnsiballZ's (ansible_<module>_payload.zip) are served. A module's code object comes from
CACHE_DIR when an entry for its exact source bytes, this interpreter's magic number and optimization level
exists; otherwise it is compiled exactly as zipimport compiles it and the entry is written (to a temporary
name, then renamed: parallel processes are safe). co_filename is set to the path in this zip, as if compiled
here. Any error falls back to plain zipimport. BCQ_ZIP_PYC_CACHE=0 turns it off; a path in it moves the cache.
"""

import os
import sys
import zipimport

ENV = 'BCQ_ZIP_PYC_CACHE'
CACHE_DIR = os.path.join(sys.prefix, 'ansiballz-pyc-cache')


class CachingZipImporter(zipimport.zipimporter):
    """zipimporter whose code objects come from the cache; everything else is zipimport's own."""

    def get_filename(self, fullname):
        found = self._cached(fullname, keep=True)
        return found[1] if found else super().get_filename(fullname)

    def get_code(self, fullname):
        found = self._cached(fullname, keep=False)
        return found[0] if found else super().get_code(fullname)

    def _cached(self, fullname, keep):
        """(code, path) of a module whose source is in the zip, or None to let zipimport do it.

        find_spec asks get_filename, then exec_module asks get_code: the code is kept in between.
        """
        try:
            kept = self.__dict__.setdefault('_kept_code', {})
            found = kept.get(fullname) if keep else kept.pop(fullname, None)
            if found is None:
                found = self._load(fullname)
                if keep:
                    kept[fullname] = found
            return found
        except Exception:  # pylint: disable=broad-except  # any trouble: zipimport does it the usual way
            return None

    def _load(self, fullname):
        inner = self.prefix + fullname.rpartition('.')[2]
        if self.is_package(fullname):
            inner += os.sep + '__init__'
        try:
            self.get_data(inner + '.pyc')
            return None  # zipimport prefers bytecode in the zip over the source: leave that case to it
        except OSError:
            pass
        source = self.get_data(inner + '.py')
        path = self.archive + os.sep + inner + '.py'
        return code_for(source, path), path


def code_for(source, path):
    """The code object compile() gives for source as zipimport compiles it, from the cache when there."""
    import _imp  # pylint: disable=import-outside-toplevel
    import _frozen_importlib_external  # pylint: disable=import-outside-toplevel  # loaded at startup, unlike importlib.util
    import hashlib  # pylint: disable=import-outside-toplevel
    import marshal  # pylint: disable=import-outside-toplevel

    magic = _frozen_importlib_external.MAGIC_NUMBER
    digest = hashlib.sha256(magic + bytes([sys.flags.optimize]) + source).hexdigest()
    entry = os.path.join(_cache_dir(), '%s-%s.code' % (sys.implementation.cache_tag, digest))
    try:
        with open(entry, 'rb') as f:
            data = f.read()
        if data[:len(magic)] == magic:
            code = marshal.loads(data[len(magic):])
            if isinstance(code, type(code_for.__code__)):
                _imp._fix_co_filename(code, path)  # pylint: disable=protected-access
                return code
    except Exception:  # pylint: disable=broad-except  # no entry, or a damaged one: compile and (re)write it
        pass

    code = compile(source.replace(b'\r\n', b'\n').replace(b'\r', b'\n'), path, 'exec', dont_inherit=True)
    _write_atomically(entry, magic + marshal.dumps(code))
    return code


def _cache_dir():
    setting = os.environ.get(ENV, '')
    return setting if os.path.isabs(setting) else CACHE_DIR


def _write_atomically(entry, data):
    import _thread  # pylint: disable=import-outside-toplevel

    temporary = '%s.%d.%d.tmp' % (entry, os.getpid(), _thread.get_ident())
    try:
        os.makedirs(os.path.dirname(entry), exist_ok=True)
        with open(temporary, 'wb') as f:
            f.write(data)
        os.replace(temporary, entry)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def _payload_hook(path):
    """sys.path_hooks entry: AnsiballZ payload zips and their packages' paths in them get the caching importer."""
    archive, sep, inside = path.partition('_payload.zip')
    if not (sep and os.path.basename(archive).startswith('ansible_') and inside[:1] in ('', os.sep)):
        raise ImportError('not in an AnsiballZ payload zip')
    return CachingZipImporter(path)


def install():
    """Put the hook before zipimport's, unless BCQ_ZIP_PYC_CACHE=0 (or it is there already)."""
    if os.environ.get(ENV) == '0' or any(getattr(h, '__name__', '') == '_payload_hook' for h in sys.path_hooks):
        return
    sys.path_hooks.insert(0, _payload_hook)
