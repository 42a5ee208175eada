//! The event loop (event-manager): virtqueue notifications (ioeventfds),
//! the exit request, console input. The only module that knows epoll.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::virtio::pci::VirtioPci;

/// Serves the queue notifications of one virtio-pci device.
pub struct QueueHandler {
    dev: Arc<Mutex<VirtioPci>>,
    fds: Vec<EventFd>,
}

impl QueueHandler {
    /// One eventfd per queue of `dev`.
    pub fn new(dev: Arc<Mutex<VirtioPci>>, fds: Vec<EventFd>) -> Self {
        QueueHandler { dev, fds }
    }
}

impl MutEventSubscriber for QueueHandler {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let i = events.data() as usize;
        if let Some(fd) = self.fds.get(i) {
            let _ = fd.read();
        }
        match self.dev.lock() {
            Ok(mut d) => d.queue_notify(i),
            Err(p) => p.into_inner().queue_notify(i),
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (i, fd) in self.fds.iter().enumerate() {
            let Ok(data) = u32::try_from(i) else {
                tracing::error!("cannot watch queue {i}: index does not fit the event data");
                continue;
            };
            if let Err(e) = ops.add(Events::with_data(fd, data, EventSet::IN)) {
                tracing::error!("cannot watch queue {i}: {e:?}");
            }
        }
    }
}

/// Stops the loop when the exit eventfd fires.
pub struct ExitHandler {
    fd: EventFd,
    stop: Arc<AtomicBool>,
}

impl ExitHandler {
    /// Watch `fd`, set `stop`.
    pub fn new(fd: EventFd, stop: Arc<AtomicBool>) -> Self {
        ExitHandler { fd, stop }
    }
}

impl MutEventSubscriber for ExitHandler {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.fd.read();
        self.stop.store(true, Ordering::SeqCst);
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.fd, EventSet::IN)) {
            tracing::error!("cannot watch the exit event: {e:?}");
        }
    }
}

/// Where console input goes.
pub type InputSink = Box<dyn FnMut(&[u8]) + Send>;

/// Host standard input to the guest console.
pub struct StdinHandler {
    sink: InputSink,
}

impl StdinHandler {
    /// Bytes read from stdin go to `sink`.
    pub fn new(sink: InputSink) -> Self {
        StdinHandler { sink }
    }
}

impl MutEventSubscriber for StdinHandler {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let stdin = std::io::stdin();
        match stdin.lock().read(&mut buf) {
            Ok(0) | Err(_) => {
                // EOF or error: stop watching (e.g. stdin is /dev/null).
                let _ = ops.remove(events);
            }
            Ok(n) => (self.sink)(buf.get(..n).unwrap_or(&buf)),
        }
        if events.event_set().contains(EventSet::HANG_UP) {
            let _ = ops.remove(events);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fd = std::io::stdin().as_raw_fd();
        if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            tracing::debug!("not reading stdin: {e:?}");
        }
    }
}
