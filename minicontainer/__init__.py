"""minicontainer: a small, readable container runtime.

An *image* is an inert template: layers of files plus a little JSON, never
running, never written.  A *container* is a running instance of one: its own
namespaces, its own writable layer, its own PID 1.  The package is split the
same way: the image half (archive, layers, image, store) turns an archive into
read-only layers; the runtime half (bundle, runtime, container, linux, cgroups,
security, network) turns those layers into a process.
"""

__version__ = "0.1.0"
