//! The stockx API client. (Being written.)
