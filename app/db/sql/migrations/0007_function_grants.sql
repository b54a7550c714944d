-- EXECUTE on this service's functions for the roles that call them, and no one else (issue 18).
-- PostgreSQL grants EXECUTE on a new function to PUBLIC, and Supabase's default privileges add anon
-- and authenticated (the site's public key): 0005 revoked those two from claim_notification only,
-- so PUBLIC still let the public key call it. Callers:
--   claim_notification       this service alone, as the functions' owner (DATABASE_URL's user),
--                            which keeps EXECUTE through ownership: no grant to anyone.
--   try_record_notification  the site, with its service-role key: service_role, as the site's
--                            migration grants it. The site's own code still calls it.
-- Every migration that adds a function revokes it the same way (0006 does its own);
-- tests/test_function_grants.py reads the functions from the migrations' text and checks them all.
-- Idempotent.

-- The site's try_record_notification contract back (0002 had replaced it by a plain SQL wrapper
-- that dropped it): the site's argument checks with the site's messages, SECURITY DEFINER and
-- search_path = public exactly as supabase/migrations/20251030000000_add_atomic_notification_check.sql
-- defines them. Only the claim itself is 0002's fixed one (an expired row no longer blocks forever).
create or replace function public.try_record_notification(
    p_class_watch_id uuid, p_notification_type text, p_expires_hours integer default 24)
returns boolean
language plpgsql
security definer
set search_path = public
as $$
begin
    if p_notification_type not in ('seat_available', 'instructor_assigned') then
        raise exception 'Invalid notification_type: %. Must be seat_available or instructor_assigned', p_notification_type;
    end if;
    if p_expires_hours < 1 or p_expires_hours > 168 then -- Max 1 week
        raise exception 'Invalid p_expires_hours: %. Must be between 1 and 168', p_expires_hours;
    end if;
    return public.claim_notification(p_class_watch_id, p_notification_type, p_expires_hours) is not null;
end $$;

comment on function public.try_record_notification(uuid, text, integer) is
    'Atomically checks and records notification in one operation. Returns true if notification was recorded (safe to send email), false if already exists. Eliminates race condition in parallel processing.';

do $$
declare
    f text;
    r text;
begin
    -- Every function this service creates or replaces (the grants test finds them in the migrations).
    foreach f in array array['public.claim_notification(uuid, text, integer)',
                             'public.try_record_notification(uuid, text, integer)',
                             'public.seatwatch_forget_deleted_account()'] loop
        execute format('revoke all on function %s from public', f);
        -- Roles of a real Supabase project; the bootstrap schema has them too, a bare database may not.
        foreach r in array array['anon', 'authenticated', 'service_role'] loop
            if exists (select 1 from pg_roles where rolname = r) then
                execute format('revoke all on function %s from %I', f, r);
            end if;
        end loop;
    end loop;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function public.try_record_notification(uuid, text, integer) to service_role;
    end if;
end $$;
