//! [`LiveRouter`]: the router the listener serves, replaced as a whole when a reload
//! (`crate::reload`) builds a new one. Knows only axum.

use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use axum::body::Bytes;
use axum::http::Request;
use axum::response::Response;
use axum::Router;
use tower::Service;

/// The router the server serves, swapped as a whole on reload.
#[derive(Clone)]
pub struct LiveRouter {
    current: Arc<RwLock<Router>>,
}

impl LiveRouter {
    pub fn new(router: Router) -> Self {
        Self {
            current: Arc::new(RwLock::new(router)),
        }
    }

    /// Serves `router` from the next request on.
    pub fn replace(&self, router: Router) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = router;
    }

    fn router(&self) -> Router {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl<B> Service<Request<B>> for LiveRouter
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn poll_ready(&mut self, _context: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let mut router = self.router();
        router.call(request)
    }
}
