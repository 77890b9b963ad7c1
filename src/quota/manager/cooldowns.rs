//! The TokenManager's cooldowns: the cache of the store's answers, starting, reading,
//! clearing and repairing a persisted cooldown.

use super::*;

impl ManagerState {
    /// What memory says about `scope` at `wall`, when memory decides: `Some(answer)`.
    /// Memory decides when there is no store, for a cooldown the store could not save,
    /// and for `cooldown_recheck` after the store was last asked; otherwise `None`.
    pub(super) fn remembered(&self, scope: &str, wall: i64) -> Option<Option<Cooldown>> {
        let active = |cached: &Cached| {
            cached
                .cooldown
                .clone()
                .filter(|cooldown| cooldown.until_at > wall)
        };
        match self.cooldowns.get(scope) {
            None if self.store.is_none() || self.listed_recently() => Some(None),
            None => None,
            Some(cached)
                if self.store.is_none()
                    || cached.unsaved
                    || self
                        .clock
                        .now()
                        .saturating_duration_since(cached.checked_at)
                        < self.config.cooldown_recheck =>
            {
                Some(active(cached))
            }
            Some(_) => None,
        }
    }
    /// Whether the store's list of running cooldowns was read within `cooldown_recheck`.
    fn listed_recently(&self) -> bool {
        self.listed_at.is_some_and(|at| {
            self.clock.now().saturating_duration_since(at) < self.config.cooldown_recheck
        })
    }
    /// Reads every running cooldown from the store into the cache (one read, instead of
    /// one per scope). False when the store cannot list, failed, or listed more than
    /// [`MAX_LISTED_COOLDOWNS`]; the caller then asks for the one scope.
    async fn list_all(&mut self, wall: i64) -> bool {
        if self.cannot_list {
            return false;
        }
        let Some(store) = self.store.clone() else {
            return false;
        };
        let listed = match store.all_active(wall).await {
            Ok(Some(listed)) if listed.len() <= MAX_LISTED_COOLDOWNS => listed,
            Ok(Some(listed)) => {
                warn!(running = listed.len(), most = MAX_LISTED_COOLDOWNS, "more running cooldowns than the token manager caches from one read; asking the store per scope");
                return false;
            }
            Ok(None) => {
                self.cannot_list = true;
                return false;
            }
            Err(err) => {
                warn!(error = %err, "cooldown store failed to list running cooldowns");
                return false;
            }
        };
        // What the store said replaces what it said before; a cooldown it could not
        // save stays (memory is its only record).
        self.cooldowns.retain(|_, cached| cached.unsaved);
        for found in listed {
            if self.cooldowns.contains_key(&found.scope) {
                continue;
            }
            let found = self.repair_persisted(store.clone(), found, wall).await;
            self.cooldowns.insert(
                found.scope.clone(),
                Cached {
                    cooldown: Some(found),
                    checked_at: self.clock.now(),
                    unsaved: false,
                },
            );
        }
        self.listed_at = Some(self.clock.now());
        self.cached_since_sweep = 0;
        true
    }
    /// The running cooldown of `scope`: memory, or the store (then remembered).
    pub(super) async fn lookup(&mut self, scope: &str, wall: i64) -> Option<Cooldown> {
        if let Some(answer) = self.remembered(scope, wall) {
            return answer;
        }
        if self.list_all(wall).await {
            if let Some(answer) = self.remembered(scope, wall) {
                return answer;
            }
        }
        let store = self.store.as_ref()?;
        let found = match store.active(scope, wall).await {
            Ok(Some(found)) => Some(self.repair_persisted(store.clone(), found, wall).await),
            Ok(None) => None,
            Err(err) => {
                // Fail open: a store hiccup must not stop every call; cooldowns this
                // process could not save are kept in memory (`unsaved`).
                warn!(scope = %scope, error = %err, "cooldown store failed");
                None
            }
        };
        self.cooldowns.insert(
            scope.to_string(),
            Cached {
                cooldown: found.clone(),
                checked_at: self.clock.now(),
                unsaved: false,
            },
        );
        self.cached_since_sweep += 1;
        if self.cached_since_sweep >= COOLDOWN_CACHE_SWEEP_EVERY {
            self.sweep_cooldown_cache(wall);
        }
        found
    }
    /// Drops cached answers that [`Self::remembered`] would no longer use: no running
    /// cooldown, saved, and older than `cooldown_recheck`. Running and unsaved cooldowns
    /// stay.
    pub(super) fn sweep_cooldown_cache(&mut self, wall: i64) {
        let now = self.clock.now();
        let recheck = self.config.cooldown_recheck;
        self.cooldowns.retain(|_, cached| {
            let running = cached
                .cooldown
                .as_ref()
                .is_some_and(|cooldown| cooldown.until_at > wall);
            running || cached.unsaved || now.saturating_duration_since(cached.checked_at) < recheck
        });
        self.cooldowns.shrink_to_fit();
        self.cached_since_sweep = 0;
    }
    /// A running cooldown that stops any of `keys`. In Redis mode the acquire script
    /// checks the shared cooldown keys itself (so a cooldown cleared by another daemon
    /// ends here too), and this answers `None`.
    pub(super) async fn cooling(&mut self, keys: &[BucketKey]) -> Option<Cooldown> {
        if matches!(self.buckets, Buckets::Redis(_)) {
            return None;
        }
        let wall = self.clock.wall_now().timestamp();
        for key in keys {
            for scope in key.cooldown_scopes() {
                if let Some(cooldown) = self.lookup(&scope, wall).await {
                    return Some(cooldown);
                }
            }
        }
        None
    }
    /// Answers every queued request stopped by `cooldown`.
    pub(super) fn fail_cooling(&mut self, cooldown: &Cooldown) {
        let scope = cooldown.scope.clone();
        let stopped = self.queue.remove_where(|pending| {
            pending
                .keys
                .iter()
                .any(|key| key.cooldown_scopes().contains(&scope))
        });
        for pending in stopped {
            self.stats.cooling_down += 1;
            if let Some(reply) = self.replies.remove(&pending.id) {
                let _ = reply.send(Err(cooling_down(cooldown)));
            }
        }
    }
    pub(super) async fn start_cooldown(
        &mut self,
        scope: String,
        reason: CooldownReason,
        until: DateTime<Utc>,
        detail: Option<String>,
    ) -> Result<Cooldown, QuotaError> {
        let wall = self.clock.wall_now().timestamp();
        let until = match crate::quota::bounded_cooldown_end(until.timestamp(), wall) {
            Some(bounded) => {
                warn!(scope = %scope, until_at = until.timestamp(), repaired_until = %crate::domain::format_ts(bounded), "cooldown longer than the limit; clamped");
                DateTime::<Utc>::from_timestamp(bounded, 0).unwrap_or(until)
            }
            None => until,
        };
        let mut cooldown = Cooldown {
            scope: scope.clone(),
            reason: reason.as_str().to_string(),
            started_at: wall,
            until_at: until.timestamp().max(wall),
            detail,
        };
        // A running cooldown that ends later keeps its end (as the stores do).
        if let Some(Cached {
            cooldown: Some(running),
            ..
        }) = self.cooldowns.get(&scope)
        {
            if running.until_at > cooldown.until_at {
                cooldown.until_at = running.until_at;
            }
        }
        let stored = match &self.store {
            Some(store) => store.set(&cooldown).await,
            None => Ok(()),
        };
        self.cooldowns.insert(
            scope.clone(),
            Cached {
                cooldown: Some(cooldown.clone()),
                checked_at: self.clock.now(),
                unsaved: stored.is_err(),
            },
        );
        info!(scope = %scope, reason = %cooldown.reason, until = %crate::domain::format_ts(cooldown.until_at), "cooldown started");
        self.fail_cooling(&cooldown);
        match stored {
            Ok(()) => Ok(cooldown),
            Err(err) => {
                warn!(scope = %scope, error = %err, "cooldown store failed");
                Err(err)
            }
        }
    }
    pub(super) async fn get_cooldown(&mut self, scope: &str) -> Option<Cooldown> {
        let wall = self.clock.wall_now().timestamp();
        self.lookup(scope, wall).await
    }
    pub(super) async fn clear_cooldown(&mut self, scope: &str) -> bool {
        let wall = self.clock.wall_now().timestamp();
        let in_memory = matches!(
            self.cooldowns.remove(scope),
            Some(Cached { cooldown: Some(cooldown), .. }) if cooldown.until_at > wall
        );
        let stored = match &self.store {
            Some(store) => match store.clear(scope).await {
                Ok(cleared) => cleared,
                Err(err) => {
                    warn!(scope = %scope, error = %err, "cooldown store failed");
                    false
                }
            },
            None => false,
        };
        let cleared = in_memory || stored;
        if cleared {
            info!(scope = %scope, "cooldown cleared");
        }
        cleared
    }
    /// A persisted cooldown as read back, its end bounded to `wall + MAX_COOLDOWN`: a
    /// longer one (a corrupt row, an older build's wrapped value, `i64::MAX`) is clamped,
    /// logged with the value found, and written back clamped; never fatal.
    pub(super) async fn repair_persisted(
        &self,
        store: Arc<dyn CooldownStore>,
        mut found: Cooldown,
        wall: i64,
    ) -> Cooldown {
        let Some(repaired) = crate::quota::bounded_cooldown_end(found.until_at, wall) else {
            return found;
        };
        warn!(
            scope = %found.scope,
            until_at = found.until_at,
            repaired_until = %crate::domain::format_ts(repaired),
            "persisted cooldown ends out of range; clamped"
        );
        found.until_at = repaired;
        found.started_at = found
            .started_at
            .clamp(wall.saturating_sub(crate::quota::MAX_COOLDOWN_SECS), wall);
        // The stores keep the later end on `set`: clear first, then save the repair.
        let saved = match store.clear(&found.scope).await {
            Ok(_) => store.set(&found).await,
            Err(err) => Err(err),
        };
        if let Err(err) = saved {
            warn!(scope = %found.scope, error = %err, "cooldown store failed");
        }
        found
    }
}
