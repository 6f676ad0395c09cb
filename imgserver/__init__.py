"""imgserver: a simplestreams image server for the LXD images lxdocker writes."""
