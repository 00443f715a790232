//! TODO(helper): command line.
