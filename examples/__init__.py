"""Services built on the mesh, small enough to read: greeter, goods, gateway."""
