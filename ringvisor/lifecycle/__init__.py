"""The VM lifecycle: a VM as data -- saved, restored, cloned, snapshotted, replayed, migrated.

``protocol`` is the contract components implement; ``stream`` the image
format; ``vm`` captures and restores a machine and its monitor.
"""
