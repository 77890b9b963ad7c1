//! The keepa API client. (Being written.)
