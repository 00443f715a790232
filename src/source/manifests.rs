//! TODO(helper): manifest directory loader.
