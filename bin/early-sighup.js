// `tessera serve`, `start` and `gateway` reload their configuration on SIGHUP, whose default action
// ends the process. The CLI's modules take a moment to load, and a reload asked for meanwhile
// (`systemctl reload` or a logrotate postrotate right after a restart) must neither kill the
// server nor be lost: it is remembered from here on and replayed once the server handles SIGHUP
// itself, which it announces with the process event `tessera:signals`.

const COMMANDS = new Set(['serve', 'start', 'gateway']);

/**
 * Hold SIGHUP for the server commands until the server installs its own handler.
 *
 * @param {readonly string[]} argv the CLI's arguments (after `node tessera.js`)
 * @param {NodeJS.Process} [proc]
 */
export function holdEarlySighup(argv, proc = process) {
  if (!COMMANDS.has(argv[0] ?? '')) return;
  let pending = false;
  const remember = () => {
    pending = true;
  };
  proc.on('SIGHUP', remember);
  proc.once('tessera:signals', () => {
    proc.off('SIGHUP', remember);
    // On a later turn: the server announces its handler before the code that awaits it resumes.
    if (pending) setImmediate(() => proc.emit('SIGHUP', 'SIGHUP'));
  });
}
