"""Machine images: the streaming bundler (client side) and the node-side image pipeline and cache.

Shared by the CLI (`euca bundle-image`, `euca unbundle`) and the NC role, so it lives outside euca/roles.
Wire formats (the manifests) are in euca.protocol.bundle.
"""
