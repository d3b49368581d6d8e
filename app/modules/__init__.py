"""The modules. Each is a boundary: it imports only its own package, app.bus, app.kernel
and other modules' contracts."""
