//! UFTP data channel: multi-stream (JPARSS) framing and codec stacks (work in progress).
