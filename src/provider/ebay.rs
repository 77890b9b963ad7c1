//! The ebay API client. (Being written.)
