-- The Supabase-equivalent schema this service reads, for tests, the sandbox and local runs.
-- Mirrors the running PickMyClass database as the site's own migrations leave it: the same column
-- types and constraints, row-level security on every public table, and Supabase's roles with its
-- default grants (anon and authenticated get every privilege on public tables and functions, so a
-- table without RLS is open to anyone holding the site's public key; service_role, the site's
-- server key, every privilege on functions). Its defective try_record_notification is kept too,
-- exactly as the site defines it (migration 0002 replaces it, 0007 restores its contract). Idempotent; never needed
-- against the real Supabase project.

do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    -- The site's server-side key (it calls try_record_notification with it); bypasses RLS.
    if not exists (select 1 from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
end $$;

grant usage on schema public to anon, authenticated, service_role;
-- Supabase's defaults for objects the owner creates later (this service's migrations included).
alter default privileges in schema public grant all on tables to anon, authenticated;
alter default privileges in schema public grant all on sequences to anon, authenticated;
alter default privileges in schema public grant all on functions to anon, authenticated;
alter default privileges in schema public grant all on functions to service_role;

create schema if not exists auth;

create table if not exists auth.users (
    id uuid primary key default gen_random_uuid(),
    email varchar(255)
);

create table if not exists public.class_watches (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references auth.users (id) on delete cascade,
    term text not null,
    subject text not null,
    catalog_nbr text not null,
    class_nbr text not null,
    created_at timestamptz not null default now(),
    unique (user_id, term, class_nbr)
);

create table if not exists public.class_states (
    id uuid primary key default gen_random_uuid(),
    term text not null,
    subject text not null,
    catalog_nbr text not null,
    class_nbr text not null unique,
    title text,
    instructor_name text,
    seats_available integer not null default 0,
    seats_capacity integer not null default 0,
    non_reserved_seats integer,
    location text,
    meeting_times text,
    last_checked_at timestamptz not null default now(),
    last_changed_at timestamptz not null default now()
);

create or replace function public.class_states_track_change() returns trigger
language plpgsql as $$
begin
    if new.seats_available is distinct from old.seats_available
       or new.non_reserved_seats is distinct from old.non_reserved_seats
       or new.instructor_name is distinct from old.instructor_name then
        new.last_changed_at := now();
    end if;
    -- As production's update_class_state_changed_at: an unchanged row keeps whatever the writer
    -- set (the site's own look-ups set last_changed_at with last_checked_at; the old Worker's
    -- check sets neither, so the row keeps its old value), and every update is a check.
    new.last_checked_at := now();
    return new;
end $$;

drop trigger if exists class_states_track_change on public.class_states;
create trigger class_states_track_change before update on public.class_states
    for each row execute function public.class_states_track_change();

create table if not exists public.notifications_sent (
    id uuid primary key default gen_random_uuid(),
    class_watch_id uuid not null references public.class_watches (id) on delete cascade,
    notification_type text not null
        check (notification_type in ('seat_available', 'instructor_assigned')),
    sent_at timestamptz not null default now(),
    expires_at timestamptz not null default now() + interval '24 hours',
    unique (class_watch_id, notification_type)
);

create table if not exists public.user_profiles (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null unique references auth.users (id) on delete cascade,
    notifications_enabled boolean not null default true,
    email_bounced boolean not null default false,
    spam_complained boolean not null default false,
    is_disabled boolean not null default false,
    is_admin boolean not null default false,
    unsubscribed_at timestamptz,
    email_bounced_at timestamptz,
    spam_complained_at timestamptz,
    disabled_at timestamptz,
    agreed_to_terms_at timestamptz,
    age_verified_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create or replace function public.get_sections_to_check(stagger_type text)
returns table (class_nbr text, term text)
language sql stable as $$
    select distinct cw.class_nbr, cw.term
    from public.class_watches cw
    where case stagger_type
        when 'even' then right(cw.class_nbr, 1) in ('0', '2', '4', '6', '8')
        when 'odd' then right(cw.class_nbr, 1) in ('1', '3', '5', '7', '9')
        else true
    end
$$;

create or replace function public.get_watchers_for_sections(section_numbers text[])
returns table (user_id uuid, email text, watch_id uuid, class_nbr text)
language sql stable as $$
    select cw.user_id, u.email::text, cw.id, cw.class_nbr
    from public.class_watches cw
    join auth.users u on u.id = cw.user_id
    left join public.user_profiles p on p.user_id = cw.user_id
    where cw.class_nbr = any (section_numbers)
      and u.email is not null
      and coalesce(p.notifications_enabled, true)
      and not coalesce(p.email_bounced, false)
      and not coalesce(p.spam_complained, false)
      and not coalesce(p.is_disabled, false)
$$;

-- The running version, as the site's migration 20251030000000_add_atomic_notification_check.sql
-- defines it (argument checks, SECURITY DEFINER, search_path, EXECUTE granted to service_role): once
-- a row exists, even an expired one, it returns false forever (the insert hits the unique key).
do $$
begin
    if not exists (select 1 from pg_proc where proname = 'try_record_notification') then
        create function public.try_record_notification(
            p_class_watch_id uuid, p_notification_type text, p_expires_hours integer default 24)
        returns boolean language plpgsql security definer set search_path = public as $f$
        declare
            v_existing_id uuid;
        begin
            if p_notification_type not in ('seat_available', 'instructor_assigned') then
                raise exception 'Invalid notification_type: %. Must be seat_available or instructor_assigned', p_notification_type;
            end if;
            if p_expires_hours < 1 or p_expires_hours > 168 then
                raise exception 'Invalid p_expires_hours: %. Must be between 1 and 168', p_expires_hours;
            end if;
            select id into v_existing_id from public.notifications_sent
            where class_watch_id = p_class_watch_id and notification_type = p_notification_type
              and expires_at > now()
            limit 1;
            if v_existing_id is not null then
                return false;
            end if;
            begin
                insert into public.notifications_sent (class_watch_id, notification_type, sent_at, expires_at)
                values (p_class_watch_id, p_notification_type, now(), now() + (p_expires_hours || ' hours')::interval);
                return true;
            exception when unique_violation then
                return false;
            end;
        end $f$;
        grant execute on function public.try_record_notification(uuid, text, integer) to service_role;
    end if;
end $$;

-- Every table the site created has RLS on (with policies for signed-in users, not needed here), and
-- the default grants above apply to them as well.
alter table public.class_watches enable row level security;
alter table public.class_states enable row level security;
alter table public.notifications_sent enable row level security;
alter table public.user_profiles enable row level security;
grant all on public.class_watches, public.class_states, public.notifications_sent,
    public.user_profiles to anon, authenticated;
