//! Caps on the WebSocket sockets one user and one client address may hold at once on
//! this gateway, so a single account or host cannot exhaust its descriptors and memory.
//! A slot is reserved before the upgrade (the refusal is a plain 429) and given back
//! when the socket ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// The limits; 0 turns one off.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    pub per_user: usize,
    pub per_client: usize,
}

/// Which cap a refused socket hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapHit {
    User,
    Client,
}

#[derive(Clone)]
pub struct SocketCaps(Arc<Inner>);

struct Inner {
    limits: SocketLimits,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    users: HashMap<Uuid, usize>,
    clients: HashMap<IpAddr, usize>,
}

/// One reserved socket; dropping it frees the slot.
pub struct SocketSlot {
    caps: SocketCaps,
    user: Uuid,
    client: Option<IpAddr>,
}

impl SocketCaps {
    pub fn new(limits: SocketLimits) -> Self {
        Self(Arc::new(Inner {
            limits,
            held: Mutex::new(Held::default()),
        }))
    }

    /// Reserves a socket for `user` from `client` (`None` when the peer address is unknown,
    /// which only the per-user cap then bounds).
    pub fn reserve(&self, user: Uuid, client: Option<IpAddr>) -> Result<SocketSlot, CapHit> {
        let limits = self.0.limits;
        let mut held = self.held();
        let by_user = held.users.get(&user).copied().unwrap_or(0);
        if limits.per_user > 0 && by_user >= limits.per_user {
            return Err(CapHit::User);
        }
        if let Some(ip) = client {
            let by_client = held.clients.get(&ip).copied().unwrap_or(0);
            if limits.per_client > 0 && by_client >= limits.per_client {
                return Err(CapHit::Client);
            }
            *held.clients.entry(ip).or_default() += 1;
        }
        *held.users.entry(user).or_default() += 1;
        Ok(SocketSlot {
            caps: self.clone(),
            user,
            client,
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut held = self.caps.held();
        decrement(&mut held.users, self.user);
        if let Some(ip) = self.client {
            decrement(&mut held.clients, ip);
        }
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_over_the_cap_is_refused_until_a_slot_frees() {
        let caps = SocketCaps::new(SocketLimits {
            per_user: 2,
            per_client: 0,
        });
        let u = Uuid::new_v4();
        let one = caps.reserve(u, None);
        let _two = caps.reserve(u, None);
        assert!(matches!(caps.reserve(u, None), Err(CapHit::User)));
        assert!(caps.reserve(Uuid::new_v4(), None).is_ok());
        drop(one);
        assert!(caps.reserve(u, None).is_ok());
    }

    #[test]
    fn a_client_address_over_the_cap_is_refused() {
        let caps = SocketCaps::new(SocketLimits {
            per_user: 0,
            per_client: 1,
        });
        let ip: IpAddr = [10, 0, 0, 1].into();
        let _one = caps.reserve(Uuid::new_v4(), Some(ip));
        assert!(matches!(
            caps.reserve(Uuid::new_v4(), Some(ip)),
            Err(CapHit::Client)
        ));
        assert!(caps
            .reserve(Uuid::new_v4(), Some([10, 0, 0, 2].into()))
            .is_ok());
    }
}
