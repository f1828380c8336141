# mmurr's commands for gdb, loaded by `mmurr gdb TRACE` (or `source` this file yourself).
# Commands that move the replay also make gdb re-read the registers: gdb caches them and
# does not know a monitor command moved the target.

# A seek into a run of a long trace re-executes it on mmurr-emu, which can take seconds the
# first time (a Linux boot: 1-4 s); gdb's default 2 s would drop the connection meanwhile.
set remotetimeout 60

define-prefix mmurr

define mmurr seek
  monitor seek $arg0
  maintenance flush register-cache
end
document mmurr seek
Move the replay to step N: mmurr seek N.
end

define mmurr goto-event
  monitor goto-event $arg0
  maintenance flush register-cache
end
document mmurr goto-event
Move the replay to the step of event N: mmurr goto-event N.
end

define mmurr when
  monitor when
end
document mmurr when
The current step and the events around it.
end

define mmurr check
  monitor check
end
document mmurr check
MMU-context findings at this point, under every policy.
end

define mmurr role
  if $argc == 0
    monitor role
  else
    monitor role $arg0
  end
end
document mmurr role
cpu_role and root_role field by field, and the kept MMU context: mmurr role [POLICY].
end

define mmurr walk
  if $argc == 1
    monitor walk $arg0
  else
    monitor walk $arg0 $arg1
  end
end
document mmurr walk
The page walk of ADDR level by level, architecture against kept context: mmurr walk ADDR [POLICY].
end
