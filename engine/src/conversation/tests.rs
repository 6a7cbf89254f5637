//! Unit tests of the conversation trackers on synthetic signals and activity masks.
