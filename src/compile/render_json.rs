//! TODO(helper): libnftables JSON renderer.
