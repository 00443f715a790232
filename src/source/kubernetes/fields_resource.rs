//! [`fields_resource!`]: `kube::Resource` for a type that reads some of a built-in kind's fields
//! ([`super::pod_fields::PodFields`], [`super::cluster_kinds::NodeFields`]): the kind, group,
//! version and plural of the whole kind, and the type's own `metadata`.

/// Implements `kube::Resource` for `$fields`, a partial `$whole` with a `metadata` field, in
/// `$scope`.
macro_rules! fields_resource {
    ($fields:ty, $whole:ty, $scope:ty) => {
        impl kube::Resource for $fields {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::kind(dt)
            }

            fn group(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::group(dt)
            }

            fn version(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::version(dt)
            }

            fn plural(dt: &()) -> ::std::borrow::Cow<'_, str> {
                <$whole as kube::Resource>::plural(dt)
            }

            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub(super) use fields_resource;
