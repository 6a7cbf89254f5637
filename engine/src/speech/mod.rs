//! Audio in, voice activity, fbank and the ECAPA-TDNN speaker model (filled in by the speaker work).
