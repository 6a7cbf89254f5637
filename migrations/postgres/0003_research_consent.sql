-- Research use is a member's separate choice, default off: a session's live data is copied to
-- the research subjects only while every member has granted it (and consent).
ALTER TABLE relationship_members ADD COLUMN research_consent TEXT NOT NULL DEFAULT 'pending';
