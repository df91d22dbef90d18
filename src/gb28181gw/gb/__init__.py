"""GB/T 28181 procedures, still sans-I/O: records + message + now in, reply + records + events out."""
