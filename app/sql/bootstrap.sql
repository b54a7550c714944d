-- The Supabase-equivalent schema this service reads, for tests, the sandbox and local runs.
-- Mirrors the running PickMyClass database (including its defective try_record_notification,
-- which migration 0002 replaces). Idempotent; never needed against the real Supabase project.

create schema if not exists auth;

create table if not exists auth.users (
    id uuid primary key default gen_random_uuid(),
    email text
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
    subject text,
    catalog_nbr text,
    class_nbr text not null unique,
    title text,
    instructor_name text,
    seats_available integer,
    seats_capacity integer,
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
    else
        new.last_changed_at := old.last_changed_at;
    end if;
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
    created_at timestamptz not null default now()
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

-- The running version: once a row exists, even an expired one, it returns false forever.
do $$
begin
    if not exists (select 1 from pg_proc where proname = 'try_record_notification') then
        create function public.try_record_notification(
            p_class_watch_id uuid, p_notification_type text, p_expires_hours integer default 24)
        returns boolean language plpgsql as $f$
        begin
            insert into public.notifications_sent (class_watch_id, notification_type, expires_at)
            values (p_class_watch_id, p_notification_type, now() + make_interval(hours => p_expires_hours));
            return true;
        exception when unique_violation then
            return false;
        end $f$;
    end if;
end $$;
