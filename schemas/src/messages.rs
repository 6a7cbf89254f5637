//! Every WebSocket message `type`, in one place: the realtime code builds and matches its
//! messages by these, and the AsyncAPI document lists them from `ALL`, so a message cannot
//! be added to one without the other.

/// An enum of wire names with `ALL`, `as_str`, `parse` and a one-line `summary` each.
macro_rules! message_types {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal, $summary:literal;)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
        }

        impl $name {
            /// Every message of this direction, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The `type` string on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($wire => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// What the message is for, as the docs say it.
            pub fn summary(self) -> &'static str {
                match self {
                    $($name::$variant => $summary,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

message_types! {
    /// A text frame's `type` from the phone.
    ClientMessageType {
        FeatureFrame = "client.feature_frame", "One analysis window of the phone: speaking rate and overlap. A nudge may answer it.";
        AudioStart = "client.audio_start", "Starts an audio stream: the binary frames that follow are its audio, in this codec.";
        AudioStop = "client.audio_stop", "Ends the current audio stream.";
        Ping = "client.ping", "Asks for `server.pong`, with the highest frame seq accepted so far.";
    }
}

message_types! {
    /// A text frame's `type` from the server.
    ServerMessageType {
        Joined = "server.joined", "First on every socket, before any replay: where the session's history and this user's frames stand.";
        SessionState = "server.session_state", "Who is connected, whenever the list changes.";
        Nudge = "server.nudge", "A coaching nudge for this member; carries `event_id`.";
        Speaker = "server.speaker", "Who spoke in an audio segment; carries `event_id`.";
        Poke = "server.poke", "A poke from a partner; carries `event_id` in a running session.";
        Resync = "server.resync", "The events after `since` are no longer held: refetch over REST.";
        Pong = "server.pong", "The answer to `client.ping`.";
        Error = "server.error", "A frame was refused; the socket stays open.";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_and_names_its_direction() {
        for t in ClientMessageType::ALL {
            assert_eq!(ClientMessageType::parse(t.as_str()), Some(*t));
            assert!(t.as_str().starts_with("client."));
        }
        for t in ServerMessageType::ALL {
            assert_eq!(ServerMessageType::parse(t.as_str()), Some(*t));
            assert!(t.as_str().starts_with("server."));
        }
        assert_eq!(ClientMessageType::parse("client.dance"), None);
    }
}
